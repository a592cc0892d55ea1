//! The fuzz targets on stable: every file of the committed corpus (`fuzz/corpus/<target>/`)
//! and a fixed number of deterministic mutations of each — bit flips, truncations, byte
//! and token insertions, length-field and number edits, splices — go through the same
//! functions `cargo fuzz` runs (`r1_host::fuzzing`), so every `cargo test` exercises the
//! decoders of outside bytes without a nightly toolchain. An input that panics fails the
//! test naming the target, the seed and the mutation, and is written under the test's
//! temp directory for `cargo +nightly fuzz run <target> <file>`. Inputs stay within a few
//! hundred KiB: an abort (out of memory) would end the test binary, not fail one test.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Instant;

use r1_host::fuzzing::TARGETS;

/// Mutated inputs per corpus file.
const MUTATIONS_PER_SEED: usize = 1000;
/// Largest input the mutations make.
const MAX_INPUT_BYTES: usize = 256 << 10;
/// The committed corpus stays small.
const MAX_CORPUS_BYTES: u64 = 1 << 20;
/// libFuzzer runs a target on the main thread; the test runs each on a thread with a
/// stack as large, not the 2 MiB of a test thread.
const STACK_BYTES: usize = 8 << 20;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

/// splitmix64: a fixed sequence of mutations for every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Bytes that mean something to the decoders: JSON and Jinja syntax, escapes, invalid
/// UTF-8.
const TOKENS: [&[u8]; 16] = [
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b",",
    b":",
    b"null",
    b"{{",
    b"}}",
    b"{%",
    b"%}",
    b"\\u0000",
    b"\xff\xfe",
    b"\xf0\x9f",
];

/// Numbers that cross limits: zero, negative, around 2^32 and 2^64, huge floats.
const NUMBERS: [&str; 9] = [
    "0",
    "-1",
    "1",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "99999999999999999999999",
    "1e308",
    "-0.0",
];

/// Length-field values: a length or offset from a header, edited.
fn interesting_lengths(len: usize) -> [u64; 9] {
    let len = len as u64;
    [
        0,
        1,
        len.saturating_sub(8),
        len,
        len + 1,
        0x7fff_ffff,
        0xffff_ffff,
        1 << 40,
        u64::MAX,
    ]
}

/// Applies one random mutation to `input`, returning its description.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) -> String {
    let len = input.len();
    match rng.below(8) {
        0 if len > 0 => {
            let i = rng.below(len);
            let bit = rng.below(8);
            input[i] ^= 1 << bit;
            format!("flip bit {bit} of byte {i}")
        }
        1 if len > 0 => {
            let at = rng.below(len);
            input.truncate(at);
            format!("truncate to {at}")
        }
        2 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            input.splice(at..at, bytes);
            format!("insert {n} random bytes at {at}")
        }
        3 => {
            let at = rng.below(len + 1);
            let token = *rng.pick(&TOKENS);
            input.splice(at..at, token.iter().copied());
            format!("insert {:?} at {at}", String::from_utf8_lossy(token))
        }
        4 if len >= 4 => {
            // Headers keep lengths at the start (safetensors) or near it (checkpoints).
            let at = if rng.below(2) == 0 { 0 } else { rng.below(len.min(64)) };
            let value = *rng.pick(&interesting_lengths(len));
            let width = if rng.below(2) == 0 { 8 } else { 4 };
            let bytes = value.to_le_bytes();
            let end = (at + width).min(len);
            input[at..end].copy_from_slice(&bytes[..end - at]);
            format!("write length {value} ({width} bytes) at {at}")
        }
        5 => {
            // A number in text (a JSON field, a template literal) replaced.
            let digits: Vec<usize> = (0..len).filter(|&i| input[i].is_ascii_digit()).collect();
            if digits.is_empty() {
                return "no change (no digits)".into();
            }
            let start = *rng.pick(&digits);
            let end = (start..len).find(|&i| !input[i].is_ascii_digit()).unwrap_or(len);
            let number = *rng.pick(&NUMBERS);
            input.splice(start..end, number.bytes());
            format!("replace the number at {start} with {number}")
        }
        6 if len > 0 => {
            // A slice of the input repeated in place: nesting, repeated fields.
            let start = rng.below(len);
            let end = (start + 1 + rng.below(64)).min(len);
            let copies = 1 + rng.below(16);
            let chunk = input[start..end].to_vec();
            let repeated: Vec<u8> = chunk.iter().copied().cycle().take(chunk.len() * copies).collect();
            input.splice(end..end, repeated);
            format!("repeat bytes {start}..{end} {copies} more times")
        }
        _ => {
            // Splice: the head of this input and the tail of another seed.
            let other = rng.pick(corpus);
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
            format!("splice at {cut} with another seed from {from}")
        }
    }
}

/// The name of the threads that replay inputs.
const REPLAY_THREAD: &str = "fuzz-replay";

thread_local! {
    /// Where and why the last input panicked on this replay thread.
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Replay threads keep their panics (expected by the thousand in the self-check, and
/// reported with their input when real) out of the test output: the message and
/// location go to `LAST_PANIC`. Other threads keep the default hook.
fn quiet_replay_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(REPLAY_THREAD) {
                let at = info.location().map(|l| format!(" at {l}")).unwrap_or_default();
                let message = info
                    .payload()
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                LAST_PANIC.with(|last| *last.borrow_mut() = format!("{message}{at}"));
            } else {
                default(info);
            }
        }));
    });
}

/// An input that panicked, and where it came from.
struct Failure {
    target: &'static str,
    origin: String,
    input: Vec<u8>,
    message: String,
}

/// Runs `body` on every seed and its mutations; the inputs that panicked.
fn replay(target: &'static str, body: fn(&[u8]), seeds: &[(String, Vec<u8>)]) -> Vec<Failure> {
    let corpus: Vec<Vec<u8>> = seeds.iter().map(|(_, bytes)| bytes.clone()).collect();
    let mut failures = Vec::new();
    let mut run = |origin: String, input: Vec<u8>| {
        if catch_unwind(AssertUnwindSafe(|| body(&input))).is_err() {
            let message = LAST_PANIC.with(|last| last.take());
            failures.push(Failure {
                target,
                origin,
                input,
                message,
            });
        }
    };
    for (seed_index, (name, seed)) in seeds.iter().enumerate() {
        run(format!("seed {name}"), seed.clone());
        // One stream per target and seed: the same inputs on every run and machine.
        let mut rng = Rng(0x5eed ^ ((target.len() as u64) << 32) ^ seed_index as u64);
        for m in 0..MUTATIONS_PER_SEED {
            let mut input = seed.clone();
            let stacked = 1 + rng.below(3);
            let steps: Vec<String> = (0..stacked).map(|_| mutate(&mut rng, &mut input, &corpus)).collect();
            input.truncate(MAX_INPUT_BYTES);
            run(format!("seed {name}, mutation {m}: {}", steps.join(", ")), input);
        }
    }
    failures
}

fn read_corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, bytes)
        })
        .collect()
}

/// Writes a failing input where `cargo fuzz run` can take it, and says where.
fn report(failure: &Failure) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-failures")
        .join(failure.target);
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("input-{:016x}", fnv1a(&failure.input)));
    let _ = std::fs::write(&file, &failure.input);
    format!(
        "{}: {} panicked: {} (input: {})",
        failure.target,
        failure.origin,
        failure.message,
        file.display()
    )
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Runs `f` on a replay thread with libFuzzer's stack size.
fn on_big_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    quiet_replay_panics();
    std::thread::Builder::new()
        .name(REPLAY_THREAD.into())
        .stack_size(STACK_BYTES)
        .spawn(f)
        .expect("spawn a replay thread")
        .join()
        .expect("the replay thread itself does not panic")
}

#[test]
fn every_target_has_a_small_committed_corpus() {
    let mut total = 0;
    for (target, _) in TARGETS {
        let seeds = read_corpus(target);
        assert!(!seeds.is_empty(), "fuzz/corpus/{target}/ has no seed");
        total += seeds.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
    }
    assert!(total < MAX_CORPUS_BYTES, "the corpus is {total} bytes");
}

#[test]
fn corpus_and_mutations_replay_through_every_target_without_a_panic() {
    let started = Instant::now();
    let mut failures = Vec::new();
    for (target, body) in TARGETS {
        let seeds = read_corpus(target);
        let target_started = Instant::now();
        let found = on_big_stack(move || {
            let found = replay(target, body, &seeds);
            found.iter().map(report).collect::<Vec<_>>()
        });
        eprintln!("{target}: {:?}", target_started.elapsed());
        failures.extend(found);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("all targets: {:?}", started.elapsed());
}

#[test]
fn a_panicking_target_is_reported_with_its_input() {
    fn panics_on_a_brace(data: &[u8]) {
        assert!(!data.contains(&b'{'), "saw a brace");
    }
    let seeds = vec![
        ("plain".to_string(), b"abc".to_vec()),
        ("json".to_string(), b"{}".to_vec()),
    ];
    let failures = on_big_stack(move || {
        let found = replay("self_check", panics_on_a_brace, &seeds);
        found.iter().map(report).collect::<Vec<_>>()
    });
    assert!(
        failures
            .iter()
            .any(|f| f.contains("seed json panicked: saw a brace at host/tests/integration/fuzz_replay.rs")),
        "{failures:?}"
    );
}
