//! r1's GGML formats against ggml's own C reference, bit for bit, on the fixtures
//! `tests/fixtures/quant/make_quant_fixtures.py` produced (quantize, dequantize and the
//! scalar dot products; see that script for where each number comes from).

use r1_core::quant::{self, GgmlType, float};
use std::path::PathBuf;

/// One fixture record: a name, a GGML type, an element count and its blobs.
struct Record {
    name: String,
    ty: GgmlType,
    elements: usize,
    blobs: Vec<Vec<u8>>,
}

fn fixture_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/quant")
        .join(file)
}

/// Reads a record file (format in the generator's docstring).
fn read_records(file: &str) -> Vec<Record> {
    let data = std::fs::read(fixture_path(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut r = Reader { data: &data, at: 0 };
    assert_eq!(r.take(8), b"R1QFIX1\0", "{file}: bad magic");
    let count = r.u32();
    let records = (0..count)
        .map(|_| {
            let len = r.u16() as usize;
            let name = String::from_utf8(r.take(len).to_vec()).expect("utf-8 name");
            let id = r.u32();
            let ty = GgmlType::from_id(id).unwrap_or_else(|e| panic!("{name}: {e}"));
            let elements = r.u32() as usize;
            let blobs = (0..r.u16())
                .map(|_| {
                    let n = r.u32() as usize;
                    r.take(n).to_vec()
                })
                .collect();
            Record {
                name,
                ty,
                elements,
                blobs,
            }
        })
        .collect();
    assert_eq!(r.at, data.len(), "{file}: trailing bytes");
    records
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let s = &self.data[self.at..self.at + n];
        self.at += n;
        s
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take(2).try_into().unwrap())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Asserts equal f32 bit patterns, naming the first element that differs.
fn assert_same_bits(name: &str, actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len(), "{name}: length");
    if let Some(i) = (0..actual.len()).find(|&i| actual[i].to_bits() != expected[i].to_bits()) {
        panic!(
            "{name}: element {i}: r1 {} ({:#010x}), ggml {} ({:#010x})",
            actual[i],
            actual[i].to_bits(),
            expected[i],
            expected[i].to_bits()
        );
    }
}

/// Asserts equal bytes, naming the first byte that differs and its block.
fn assert_same_bytes(name: &str, ty: GgmlType, actual: &[u8], expected: &[u8]) {
    assert_eq!(actual.len(), expected.len(), "{name}: length");
    if let Some(i) = (0..actual.len()).find(|&i| actual[i] != expected[i]) {
        let size = ty.type_size();
        panic!(
            "{name}: byte {i} (block {}, offset {}): r1 {:#04x}, ggml {:#04x}",
            i / size,
            i % size,
            actual[i],
            expected[i]
        );
    }
}

#[test]
fn quantize_matches_ggml_reference_bit_for_bit() {
    let records = read_records("quantize.bin");
    for ty in GgmlType::ALL {
        assert!(records.iter().any(|r| r.ty == ty), "no quantize fixture for {ty}");
    }
    for rec in &records {
        let [input, bytes, deq] = &rec.blobs[..] else {
            panic!("{}: want 3 blobs", rec.name)
        };
        let x = f32s(input);
        assert_eq!(x.len(), rec.elements, "{}", rec.name);
        let q = quant::quantize(rec.ty, &x).unwrap_or_else(|e| panic!("{}: {e}", rec.name));
        assert_same_bytes(&rec.name, rec.ty, &q, bytes);
        let y = quant::dequantize(rec.ty, bytes, rec.elements).unwrap_or_else(|e| panic!("{}: {e}", rec.name));
        assert_same_bits(&rec.name, &y, &f32s(deq));
    }
}

#[test]
fn dequantize_of_random_blocks_matches_ggml_bit_for_bit() {
    let records = read_records("dequantize.bin");
    for ty in GgmlType::ALL {
        assert!(records.iter().any(|r| r.ty == ty), "no dequantize fixture for {ty}");
    }
    for rec in &records {
        let [bytes, deq] = &rec.blobs[..] else {
            panic!("{}: want 2 blobs", rec.name)
        };
        let y = quant::dequantize(rec.ty, bytes, rec.elements).unwrap_or_else(|e| panic!("{}: {e}", rec.name));
        assert_same_bits(&rec.name, &y, &f32s(deq));
    }
}

#[test]
fn vec_dot_matches_ggml_scalar_dot_products_bit_for_bit() {
    let records = read_records("vec_dot.bin");
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        assert!(records.iter().any(|r| r.ty == ty), "no vec_dot fixture for {ty}");
    }
    for rec in &records {
        let [w, a, s] = &rec.blobs[..] else {
            panic!("{}: want 3 blobs", rec.name)
        };
        let got = quant::vec_dot(rec.ty, w, a, rec.elements).unwrap_or_else(|e| panic!("{}: {e}", rec.name));
        assert_same_bits(&rec.name, &[got], &f32s(s));
    }
}

/// FNV-1a (64-bit) of a byte stream, as the generator computes it.
fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> String {
    let h = bytes.into_iter().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    });
    format!("{h:016x}")
}

fn manifest_checksum(key: &str) -> String {
    let text = std::fs::read_to_string(fixture_path("manifest.json")).expect("manifest.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    v["checksums_fnv1a64"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no checksum {key}"))
        .to_owned()
}

/// The f32 bit patterns `i · 4093` for `i < 2^20` (the generator's sample).
fn sampled_f32s() -> impl Iterator<Item = f32> {
    (0u64..1 << 20).map(|i| f32::from_bits((i * 4093) as u32))
}

#[test]
fn half_conversions_match_ggml_on_every_half_and_a_wide_f32_sample() {
    let halves = || 0..=u16::MAX;
    let f16 = fnv1a64(halves().flat_map(|h| float::f16_to_f32(h).to_le_bytes()));
    assert_eq!(f16, manifest_checksum("f16_to_f32_all_halves"), "f16 → f32");
    let bf16 = fnv1a64(halves().flat_map(|h| float::bf16_to_f32(h).to_le_bytes()));
    assert_eq!(bf16, manifest_checksum("bf16_to_f32_all_halves"), "bf16 → f32");
    let to_f16 = fnv1a64(sampled_f32s().flat_map(|f| float::f32_to_f16(f).to_le_bytes()));
    assert_eq!(to_f16, manifest_checksum("f32_to_f16_i_times_4093"), "f32 → f16");
    let to_bf16 = fnv1a64(sampled_f32s().flat_map(|f| float::f32_to_bf16(f).to_le_bytes()));
    assert_eq!(to_bf16, manifest_checksum("f32_to_bf16_i_times_4093"), "f32 → bf16");
}
