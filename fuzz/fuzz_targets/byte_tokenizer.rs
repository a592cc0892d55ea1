//! The byte-level tokenizer: any UTF-8 text round-trips exactly, and any ids decode to
//! text or to an out-of-vocabulary error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r1_host::io::ByteLevelTokenizer;

fuzz_target!(|data: &[u8]| {
    let t = ByteLevelTokenizer;
    if let Ok(text) = std::str::from_utf8(data) {
        let ids = t.encode(text);
        assert!(ids.iter().all(|&id| (id as usize) < ByteLevelTokenizer::VOCAB_SIZE));
        assert_eq!(t.decode(&ids).ok().as_deref(), Some(text));
    }
    let ids: Vec<u32> = data
        .chunks_exact(2)
        .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
        .collect();
    match t.decode_bytes(&ids) {
        Ok(_) => assert!(ids.iter().all(|&id| (id as usize) < ByteLevelTokenizer::VOCAB_SIZE)),
        Err(_) => assert!(ids.iter().any(|&id| (id as usize) >= ByteLevelTokenizer::VOCAB_SIZE)),
    }
});
