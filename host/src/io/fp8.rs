//! FP8 block-scaled weights as DeepSeek-V3/R1 ship them: `X.weight` stored as F8_E4M3
//! (float8_e4m3fn) with an f32 (or bf16/f16) `X.weight_scale_inv` per block of
//! `quantization_config.weight_block_size`, dequantized on load into the f32 weights the
//! rest of r1 uses.

use std::collections::{BTreeMap, HashMap};

use safetensors::tensor::Dtype;
use serde_json::{Map, Value};

use crate::io::error::IoError;
use crate::io::tensors::NamedTensor;

/// The suffix naming a weight's block scales: `X.weight` → `X.weight_scale_inv`
/// (transformers' `Fp8Quantize` appends it to any quantized key).
pub const SCALE_SUFFIX: &str = "_scale_inv";

/// The largest finite float8_e4m3fn value (code 0x7E).
pub const E4M3_MAX: f32 = 448.0;

/// transformers' `FineGrainedFP8Config` default when `weight_block_size` is absent.
const DEFAULT_BLOCK: [usize; 2] = [128, 128];

/// A `config.json` `quantization_config` r1 reads: block-scaled FP8 (`quant_method: "fp8"`,
/// `fmt: "e4m3"`, dynamic activations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fp8BlockConfig {
    /// `weight_block_size`: the rows and columns of a weight that share one scale.
    pub block: [usize; 2],
}

/// float8_e4m3fn's value of `code`: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits;
/// exponent 0 holds the subnormals `m · 2⁻⁹`; no infinities; 0x7F and 0xFF are NaN.
pub fn e4m3_to_f32(code: u8) -> f32 {
    E4M3_VALUES[usize::from(code)]
}

const E4M3_VALUES: [f32; 256] = e4m3_table();

const fn e4m3_table() -> [f32; 256] {
    let mut table = [0.0f32; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = e4m3_decode(code as u8);
        code += 1;
    }
    table
}

/// Every E4M3 value is exact in f32: a normal one is f32's sign, exponent rebased from
/// bias 7 to bias 127, and the 3 mantissa bits at the top of f32's 23.
const fn e4m3_decode(code: u8) -> f32 {
    let sign = ((code >> 7) as u32) << 31;
    let exponent = ((code >> 3) & 0xF) as u32;
    let mantissa = (code & 0x7) as u32;
    if exponent == 0xF && mantissa == 0x7 {
        return f32::NAN;
    }
    let magnitude = if exponent == 0 {
        mantissa as f32 / 512.0
    } else {
        f32::from_bits(((exponent + 127 - 7) << 23) | (mantissa << 20))
    };
    f32::from_bits(magnitude.to_bits() | sign)
}

/// An F8_E4M3 tensor as read from a safetensors file: its codes, not yet scaled.
#[derive(Clone, Debug, PartialEq)]
pub struct E4m3Tensor {
    /// The tensor's name in its file (`X.weight`).
    pub name: String,
    /// Its shape, `[rows, cols]` for a block-scaled weight.
    pub dims: Vec<usize>,
    /// One byte per value, row-major.
    pub codes: Vec<u8>,
}

/// Reads `quantization_config` from the bytes of a `config.json` (`file` names it in
/// errors): `None` without one, the block size for DeepSeek's block-scaled FP8, and an
/// error naming the field for any other quantization (another `quant_method`, `fmt`,
/// activation scheme or expert format, a block size that is not two positive integers, or
/// a key transformers' `FineGrainedFP8Config` does not have).
pub fn parse_fp8_config(bytes: &[u8], file: &str) -> Result<Option<Fp8BlockConfig>, IoError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| IoError::json(file, &e))?;
    match value.get("quantization_config") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(q)) => parse_fp8_fields(q, file).map(Some),
        Some(other) => Err(config_err(file, "", &format!("expected an object, found {other}"))),
    }
}

fn parse_fp8_fields(q: &Map<String, Value>, file: &str) -> Result<Fp8BlockConfig, IoError> {
    let Some(method) = q.get("quant_method") else {
        return Err(config_err(file, "quant_method", "missing (r1 reads `fp8`)"));
    };
    if method.as_str() != Some("fp8") {
        return Err(config_err(
            file,
            "quant_method",
            &format!("{method} is not supported (r1 reads block-scaled `fp8` checkpoints, as DeepSeek-V3 ships them)"),
        ));
    }
    let mut block = DEFAULT_BLOCK;
    for (key, v) in q {
        match key.as_str() {
            "quant_method" => {}
            "fmt" => expect_string(file, key, v, &["e4m3"])?,
            "activation_scheme" => expect_string(file, key, v, &["dynamic"])?,
            "scale_fmt" => expect_string(file, key, v, &["float", "ue8m0"])?,
            "expert_dtype" => expect_string(file, key, v, &["fp8"])?,
            "weight_block_size" => block = parse_block(file, v)?,
            // Which modules are quantized shows in each tensor's dtype; loading always dequantizes.
            "dequantize" | "modules_to_not_convert" | "modules_to_convert" | "ignored_layers" => {}
            _ => return Err(config_err(file, key, "is not a key of an fp8 quantization_config")),
        }
    }
    Ok(Fp8BlockConfig { block })
}

/// A string field that must be one of `allowed` (compared as transformers does, ignoring
/// case); `null` stands for the default, which is the first.
fn expect_string(file: &str, key: &str, v: &Value, allowed: &[&str]) -> Result<(), IoError> {
    match v {
        Value::Null => Ok(()),
        Value::String(s) if allowed.iter().any(|a| a.eq_ignore_ascii_case(s)) => Ok(()),
        other => Err(config_err(
            file,
            key,
            &format!("{other} is not supported (r1 reads {})", allowed.join(" or ")),
        )),
    }
}

fn parse_block(file: &str, v: &Value) -> Result<[usize; 2], IoError> {
    let parsed = v.as_array().and_then(|a| match a.as_slice() {
        [r, c] => Some([r.as_u64()?, c.as_u64()?]),
        _ => None,
    });
    match parsed {
        Some([r, c]) if r > 0 && c > 0 => match (usize::try_from(r), usize::try_from(c)) {
            (Ok(r), Ok(c)) => Ok([r, c]),
            _ => Err(config_err(file, "weight_block_size", &format!("{v} is too large"))),
        },
        _ => Err(config_err(
            file,
            "weight_block_size",
            &format!("{v} is not two positive integers [rows, columns] (per-tensor scales are not read)"),
        )),
    }
}

fn config_err(file: &str, key: &str, detail: &str) -> IoError {
    let field = if key.is_empty() {
        "quantization_config".to_string()
    } else {
        format!("quantization_config.{key}")
    };
    IoError::Field {
        file: file.to_string(),
        field,
        detail: detail.to_string(),
    }
}

/// A tensor decoded from a safetensors file, as the model-directory loader receives it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum DecodedTensor {
    /// F32, BF16 or F16, widened to f32; `dtype` is the stored one (for messages).
    Float { tensor: NamedTensor, dtype: Dtype },
    /// F8_E4M3 codes, to be scaled by their `…_scale_inv`.
    E4m3(E4m3Tensor),
}

impl DecodedTensor {
    /// The tensor's name in its file.
    pub(crate) fn name(&self) -> &str {
        match self {
            DecodedTensor::Float { tensor, .. } => &tensor.name,
            DecodedTensor::E4m3(q) => &q.name,
        }
    }
}

/// FP8 weights and their scales, met in any order across a checkpoint's files (a weight
/// and its scale may sit in different shards), paired and dequantized as soon as both are
/// there. Scales never reach the weight collector; every other tensor passes through.
pub(crate) struct Fp8Pairing {
    config: Option<Fp8BlockConfig>,
    /// F8 weights waiting for their scale, by name, with their file.
    weights: BTreeMap<String, (E4m3Tensor, String)>,
    /// Scales waiting for their weight, by the weight's name, with their file.
    scales: BTreeMap<String, (NamedTensor, String)>,
    /// FP8 weights and scales already paired → their file (for duplicate messages).
    paired: HashMap<String, String>,
    /// Float tensors passed through → (stored dtype, file): a scale for one is an error.
    floats: HashMap<String, (Dtype, String)>,
}

impl Fp8Pairing {
    /// Pairing for a directory whose `config.json` has `config` as its fp8 quantization
    /// (`None`: any F8 tensor or scale is an error).
    pub(crate) fn new(config: Option<Fp8BlockConfig>) -> Self {
        Fp8Pairing {
            config,
            weights: BTreeMap::new(),
            scales: BTreeMap::new(),
            paired: HashMap::new(),
            floats: HashMap::new(),
        }
    }

    /// Takes one tensor of `file`; returns the f32 tensor that is now complete (a float
    /// tensor as it is, or a dequantized FP8 weight) with the file that holds the weight,
    /// or `None` while an FP8 weight or a scale waits for its other half.
    pub(crate) fn route(&mut self, t: DecodedTensor, file: &str) -> Result<Option<(NamedTensor, String)>, IoError> {
        match t {
            DecodedTensor::E4m3(q) => self.take_codes(q, file),
            DecodedTensor::Float { tensor, dtype } => match tensor.name.strip_suffix(SCALE_SUFFIX) {
                Some(weight) => {
                    let weight = weight.to_string();
                    self.take_scale(weight, tensor, file)
                }
                None => self.pass_float(tensor, dtype, file).map(Some),
            },
        }
    }

    /// Errors for what is left unpaired once every file is read.
    pub(crate) fn finish(self) -> Result<(), IoError> {
        if let Some((name, (_, file))) = self.weights.into_iter().next() {
            return Err(fp8_err(
                &file,
                &name,
                &format!("is F8_E4M3 but its scale `{name}{SCALE_SUFFIX}` is in none of the checkpoint's files"),
            ));
        }
        if let Some((weight, (scale, file))) = self.scales.into_iter().next() {
            return Err(fp8_err(
                &file,
                &scale.name,
                &format!("is the block scale of `{weight}`, which none of the checkpoint's files holds"),
            ));
        }
        Ok(())
    }

    fn take_codes(&mut self, q: E4m3Tensor, file: &str) -> Result<Option<(NamedTensor, String)>, IoError> {
        let Some(config) = self.config else {
            return Err(fp8_err(
                file,
                &q.name,
                "is F8_E4M3, but config.json has no `quantization_config` with `quant_method: \"fp8\"` \
                 (r1 reads FP8 weights only as block-scaled checkpoints)",
            ));
        };
        if q.name.ends_with(SCALE_SUFFIX) {
            return Err(fp8_err(
                file,
                &q.name,
                "is a block scale stored as F8_E4M3; r1 reads F32, BF16 or F16 scales",
            ));
        }
        if q.dims.len() != 2 {
            return Err(fp8_err(
                file,
                &q.name,
                &format!("is F8_E4M3 of shape {:?}; block-scaled weights are matrices", q.dims),
            ));
        }
        self.check_new(&q.name, file)?;
        match self.scales.remove(&q.name) {
            Some((scale, scale_file)) => self.pair(config, (q, file.to_string()), (scale, scale_file)).map(Some),
            None => {
                self.weights.insert(q.name.clone(), (q, file.to_string()));
                Ok(None)
            }
        }
    }

    fn take_scale(
        &mut self,
        weight: String,
        scale: NamedTensor,
        file: &str,
    ) -> Result<Option<(NamedTensor, String)>, IoError> {
        let Some(config) = self.config else {
            return Err(fp8_err(
                file,
                &scale.name,
                "is an FP8 block scale, but config.json has no `quantization_config` with `quant_method: \"fp8\"`",
            ));
        };
        if let Some((dtype, weight_file)) = self.floats.get(&weight) {
            return Err(not_f8_err(file, &scale.name, &weight, *dtype, weight_file));
        }
        self.check_new(&scale.name, file)?;
        match self.weights.remove(&weight) {
            Some(q) => self.pair(config, q, (scale, file.to_string())).map(Some),
            None => {
                self.scales.insert(weight, (scale, file.to_string()));
                Ok(None)
            }
        }
    }

    fn pass_float(&mut self, tensor: NamedTensor, dtype: Dtype, file: &str) -> Result<(NamedTensor, String), IoError> {
        if self.config.is_some() {
            if let Some((scale, scale_file)) = self.scales.get(&tensor.name) {
                return Err(not_f8_err(scale_file, &scale.name, &tensor.name, dtype, file));
            }
            self.floats.insert(tensor.name.clone(), (dtype, file.to_string()));
        }
        Ok((tensor, file.to_string()))
    }

    /// A second FP8 weight or scale of one name (within the pending ones, or paired).
    fn check_new(&self, name: &str, file: &str) -> Result<(), IoError> {
        let pending = self.weights.get(name).map(|(_, f)| f).or_else(|| {
            let weight = name.strip_suffix(SCALE_SUFFIX)?;
            self.scales.get(weight).map(|(_, f)| f)
        });
        match pending.or_else(|| self.paired.get(name)) {
            Some(first) => Err(IoError::DuplicateTensor {
                name: name.to_string(),
                first: first.clone(),
                second: file.to_string(),
            }),
            None => Ok(()),
        }
    }

    fn pair(
        &mut self,
        config: Fp8BlockConfig,
        (q, weight_file): (E4m3Tensor, String),
        (scale, scale_file): (NamedTensor, String),
    ) -> Result<(NamedTensor, String), IoError> {
        let data = dequantize_blocks(&q, &scale, config.block).map_err(|e| match e {
            BlockError::ScaleShape(detail) | BlockError::Scale(detail) => fp8_err(&scale_file, &scale.name, &detail),
            BlockError::Weight(detail) => fp8_err(&weight_file, &q.name, &detail),
        })?;
        self.paired.insert(scale.name, scale_file);
        self.paired.insert(q.name.clone(), weight_file.clone());
        let tensor = NamedTensor {
            name: q.name,
            dims: q.dims,
            data,
        };
        Ok((tensor, weight_file))
    }
}

/// Why a weight and its scale do not dequantize; which tensor is at fault.
#[derive(Debug, Clone, PartialEq)]
enum BlockError {
    /// The scale is not one value per block.
    ScaleShape(String),
    /// A scale that is NaN or infinite.
    Scale(String),
    /// A NaN code, or a product too large for f32.
    Weight(String),
}

/// `w[r][c] = e4m3(q[r][c]) · scale_inv[r / B0][c / B1]` over a `[rows, cols]` weight with
/// `scale_inv` of shape `[⌈rows / B0⌉, ⌈cols / B1⌉]` — blocks at the bottom and right edges
/// are partial. This is DeepSeek-V3's `weight_dequant` and transformers'
/// `_dequantize_fp8_weight`: one f32 product per value, so the result is exact to the bit.
fn dequantize_blocks(q: &E4m3Tensor, scale: &NamedTensor, block: [usize; 2]) -> Result<Vec<f32>, BlockError> {
    let [rows, cols] = [q.dims[0], q.dims[1]];
    let grid = [rows.div_ceil(block[0]), cols.div_ceil(block[1])];
    if scale.dims != grid {
        return Err(BlockError::ScaleShape(format!(
            "has shape {:?}; `{}` of shape [{rows}, {cols}] in blocks of {block:?} needs {grid:?}",
            scale.dims, q.name
        )));
    }
    check_scales(&scale.data, grid)?;
    let mut out = Vec::with_capacity(q.codes.len());
    for (r, row) in q.codes.chunks_exact(cols.max(1)).enumerate().take(rows) {
        let scales = &scale.data[(r / block[0]) * grid[1]..][..grid[1]];
        out.extend(
            row.iter()
                .enumerate()
                .map(|(c, &code)| e4m3_to_f32(code) * scales[c / block[1]]),
        );
    }
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(BlockError::Weight(non_finite_detail(q, i, cols)));
    }
    Ok(out)
}

fn check_scales(scales: &[f32], grid: [usize; 2]) -> Result<(), BlockError> {
    match scales.iter().position(|s| !s.is_finite()) {
        Some(i) => Err(BlockError::Scale(format!(
            "has {} as the scale of block [{}, {}]",
            scales[i],
            i / grid[1].max(1),
            i % grid[1].max(1)
        ))),
        None => Ok(()),
    }
}

/// Why value `i` of a dequantized weight is not finite (its scales are finite).
fn non_finite_detail(q: &E4m3Tensor, i: usize, cols: usize) -> String {
    let (r, c) = (i / cols, i % cols);
    let code = q.codes[i];
    if e4m3_to_f32(code).is_nan() {
        format!("holds NaN (F8_E4M3 code {code:#04X}) at [{r}, {c}]")
    } else {
        format!("dequantizes to a value past f32's range at [{r}, {c}] (code {code:#04X} times its block's scale)")
    }
}

fn not_f8_err(scale_file: &str, scale: &str, weight: &str, dtype: Dtype, weight_file: &str) -> IoError {
    fp8_err(
        scale_file,
        scale,
        &format!(
            "is a block scale, but `{weight}` is stored as {dtype} in {weight_file}; only F8_E4M3 weights have one"
        ),
    )
}

fn fp8_err(file: &str, name: &str, detail: &str) -> IoError {
    IoError::Fp8 {
        file: file.to_string(),
        name: name.to_string(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// float8_e4m3fn by its definition, in f64: (-1)^s · 2^(e-7) · (1 + m/8), or
    /// (-1)^s · 2^-6 · m/8 for e = 0; NaN for e = 15, m = 7.
    fn e4m3_by_formula(code: u8) -> f64 {
        let s = if code & 0x80 != 0 { -1.0 } else { 1.0 };
        let e = i32::from((code >> 3) & 0xF);
        let m = f64::from(code & 7);
        match (e, m) {
            (15, 7.0) => f64::NAN,
            (0, _) => s * 2f64.powi(-6) * m / 8.0,
            _ => s * 2f64.powi(e - 7) * (1.0 + m / 8.0),
        }
    }

    #[test]
    fn every_e4m3_code_decodes_to_its_defined_value() {
        for code in 0..=255u8 {
            let (got, want) = (e4m3_to_f32(code), e4m3_by_formula(code));
            if want.is_nan() {
                assert!(got.is_nan(), "{code:#04X}: {got}");
            } else {
                assert_eq!(f64::from(got), want, "{code:#04X}");
                assert_eq!(got.is_sign_negative(), code & 0x80 != 0, "{code:#04X} sign");
            }
        }
    }

    #[test]
    fn e4m3_spot_values() {
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(0x7E), E4M3_MAX);
        assert_eq!(e4m3_to_f32(0xFE), -E4M3_MAX);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0x08), 2f32.powi(-6));
        assert_eq!(e4m3_to_f32(0x00).to_bits(), 0);
        assert_eq!(e4m3_to_f32(0x80).to_bits(), (-0.0f32).to_bits());
        assert!(e4m3_to_f32(0x7F).is_nan() && e4m3_to_f32(0xFF).is_nan());
        // No infinities: 0x78 (exponent 15, mantissa 0) is 256.
        assert_eq!(e4m3_to_f32(0x78), 256.0);
    }

    fn parse(quant: &str) -> Result<Option<Fp8BlockConfig>, IoError> {
        parse_fp8_config(format!(r#"{{"hidden_size": 8{quant}}}"#).as_bytes(), "config.json")
    }

    fn field_of(e: IoError) -> String {
        match e {
            IoError::Field { field, .. } => field,
            other => panic!("expected a field error, got {other}"),
        }
    }

    #[test]
    fn deepseek_quantization_config_reads_its_block_size() {
        let ds = r#", "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
            "quant_method": "fp8", "weight_block_size": [128, 64]}"#;
        assert_eq!(parse(ds).expect("valid"), Some(Fp8BlockConfig { block: [128, 64] }));
        let v31 = r#", "quantization_config": {"quant_method": "fp8", "scale_fmt": "ue8m0"}"#;
        assert_eq!(
            parse(v31).expect("valid"),
            Some(Fp8BlockConfig { block: DEFAULT_BLOCK })
        );
        assert_eq!(parse("").expect("none"), None);
        assert_eq!(parse(r#", "quantization_config": null"#).expect("null"), None);
    }

    #[test]
    fn other_quantizations_are_refused_by_field() {
        let cases = [
            (
                r#"{"quant_method": "gptq", "bits": 4}"#,
                "quantization_config.quant_method",
            ),
            (r#"{"fmt": "e4m3"}"#, "quantization_config.quant_method"),
            (r#"{"quant_method": "fp8", "fmt": "e5m2"}"#, "quantization_config.fmt"),
            (
                r#"{"quant_method": "fp8", "activation_scheme": "static"}"#,
                "quantization_config.activation_scheme",
            ),
            (
                r#"{"quant_method": "fp8", "weight_block_size": [0, 128]}"#,
                "quantization_config.weight_block_size",
            ),
            (
                r#"{"quant_method": "fp8", "weight_block_size": [128]}"#,
                "quantization_config.weight_block_size",
            ),
            (
                r#"{"quant_method": "fp8", "weight_block_size": null}"#,
                "quantization_config.weight_block_size",
            ),
            (
                r#"{"quant_method": "fp8", "weight_block_size": [1.5, 2]}"#,
                "quantization_config.weight_block_size",
            ),
            (
                r#"{"quant_method": "fp8", "expert_dtype": "fp4"}"#,
                "quantization_config.expert_dtype",
            ),
            (
                r#"{"quant_method": "fp8", "group_size": 32}"#,
                "quantization_config.group_size",
            ),
            (r#"[1]"#, "quantization_config"),
        ];
        for (quant, field) in cases {
            let err = parse(&format!(r#", "quantization_config": {quant}"#)).expect_err(quant);
            assert_eq!(field_of(err), field, "{quant}");
        }
    }

    fn codes(dims: [usize; 2], codes: Vec<u8>) -> E4m3Tensor {
        E4m3Tensor {
            name: "w.weight".into(),
            dims: dims.to_vec(),
            codes,
        }
    }

    fn scale(dims: [usize; 2], data: Vec<f32>) -> NamedTensor {
        NamedTensor {
            name: "w.weight_scale_inv".into(),
            dims: dims.to_vec(),
            data,
        }
    }

    #[test]
    fn partial_edge_blocks_take_their_own_scale() {
        // 3 x 5 in blocks of 2 x 2: a 2 x 3 grid whose last row and column are partial.
        let q = codes([3, 5], vec![0x38; 15]);
        let s = scale([2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let w = dequantize_blocks(&q, &s, [2, 2]).expect("dequantize");
        #[rustfmt::skip]
        let expected = [
            1.0, 1.0, 2.0, 2.0, 3.0,
            1.0, 1.0, 2.0, 2.0, 3.0,
            4.0, 4.0, 5.0, 5.0, 6.0,
        ];
        assert_eq!(w, expected);
    }

    #[test]
    fn scale_of_the_wrong_shape_is_refused() {
        let q = codes([3, 5], vec![0x38; 15]);
        let s = scale([1, 3], vec![1.0; 3]);
        let err = dequantize_blocks(&q, &s, [2, 2]).expect_err("shape");
        assert!(
            matches!(&err, BlockError::ScaleShape(d) if d.contains("[2, 3]")),
            "{err:?}"
        );
    }

    #[test]
    fn nan_codes_and_scales_are_located() {
        let mut c = vec![0x38; 6];
        c[4] = 0xFF;
        let err = dequantize_blocks(&codes([2, 3], c), &scale([1, 1], vec![1.0]), [2, 4]).expect_err("nan");
        assert_eq!(
            err,
            BlockError::Weight("holds NaN (F8_E4M3 code 0xFF) at [1, 1]".into())
        );
        let err = dequantize_blocks(&codes([2, 3], vec![0; 6]), &scale([1, 2], vec![1.0, f32::NAN]), [2, 2])
            .expect_err("nan scale");
        assert_eq!(err, BlockError::Scale("has NaN as the scale of block [0, 1]".into()));
        let huge = scale([1, 1], vec![f32::MAX]);
        let err = dequantize_blocks(&codes([1, 1], vec![0x7E]), &huge, [1, 1]).expect_err("overflow");
        assert!(
            matches!(&err, BlockError::Weight(d) if d.contains("past f32's range")),
            "{err:?}"
        );
    }
}
