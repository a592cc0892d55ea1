//! AdamW's two moments on the backend, per parameter: f32, or — with `adamw_8bit` — the
//! blockwise 8-bit state of core's [`r1_core::optim8`] for every tensor of at least
//! [`optim8::MIN_ELEMENTS`] values (2 bytes per weight instead of 8; smaller tensors keep
//! f32 moments, as bitsandbytes does). Both read and write as f32 tensors by name, so a
//! checkpoint holds f32 moments whichever optimizer wrote it.

use r1_core::backend::{AdamWStep, Backend, BackendError, TensorRef};
use r1_core::optim8::{self, Code};
use r1_core::tensor::TensorDesc;

use crate::weights::{NamedParam, ParamLayout, WeightsError};

/// Where one parameter's moments live (byte offsets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// f32 `m` and `v` in the f32 buffer.
    F32 { m: usize, v: usize },
    /// [`optim8`] states of `m` and `sqrt(v)` in the byte buffer.
    Blockwise8 { m: usize, r: usize },
}

/// Which moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// `m`, the running mean of the gradient.
    First,
    /// `v`, the running mean of its square.
    Second,
}

/// The moments of every parameter of a layout.
pub struct Moments<B: Backend> {
    layout: ParamLayout,
    slots: Vec<Slot>,
    f32s: B::Buffer,
    states: B::Buffer,
    bytes: usize,
}

impl<B: Backend> Moments<B> {
    /// Zero moments for `layout`; 8-bit for the large tensors when `eight_bit`.
    pub fn zeros(backend: &B, layout: &ParamLayout, eight_bit: bool) -> Result<Self, BackendError> {
        let (mut f32_bytes, mut state_bytes) = (0usize, 0usize);
        let mut slots = Vec::with_capacity(layout.entries().len());
        for e in layout.entries() {
            if eight_bit && e.len >= optim8::MIN_ELEMENTS {
                let bytes = optim8::state_bytes(e.len);
                slots.push(Slot::Blockwise8 {
                    m: state_bytes,
                    r: state_bytes + bytes,
                });
                state_bytes += 2 * bytes;
            } else {
                slots.push(Slot::F32 {
                    m: f32_bytes,
                    v: f32_bytes + 4 * e.len,
                });
                f32_bytes += 8 * e.len;
            }
        }
        // Every state starts as zeros: f32 zeros, and 8-bit blocks with absmax 0.
        Ok(Moments {
            layout: layout.clone(),
            slots,
            f32s: backend.alloc(f32_bytes.max(4))?,
            states: backend.alloc(state_bytes.max(4))?,
            bytes: f32_bytes + state_bytes,
        })
    }

    /// Bytes the moments take on the backend.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// One AdamW update of parameter `i` (`param`, `grad`: its f32 tensors).
    pub fn adamw(
        &self,
        backend: &B,
        i: usize,
        param: TensorRef<'_, B::Buffer>,
        grad: TensorRef<'_, B::Buffer>,
        step: &AdamWStep,
    ) -> Result<(), BackendError> {
        let n = self.layout.entries()[i].len;
        let at = |buffer, offset, desc| TensorRef { buffer, offset, desc };
        match self.slots[i] {
            Slot::F32 { m, v } => {
                let desc = TensorDesc::f32(&[n]);
                backend.adamw(param, grad, at(&self.f32s, m, desc), at(&self.f32s, v, desc), step)
            }
            Slot::Blockwise8 { m, r } => backend.adamw_8bit(
                param,
                grad,
                at(&self.states, m, optim8::state_desc(Code::Signed, n)),
                at(&self.states, r, optim8::state_desc(Code::Unsigned, n)),
                step,
            ),
        }
    }

    /// Every parameter's `(m, v)` as f32 `(name, dims, values)`, in layout order.
    pub fn download_all(&self, backend: &B) -> Result<(Vec<NamedParam>, Vec<NamedParam>), WeightsError> {
        let (mut ms, mut vs) = (Vec::new(), Vec::new());
        for (i, e) in self.layout.entries().iter().enumerate() {
            let (m, v) = self.download(backend, i)?;
            ms.push((e.name.clone(), e.dims.clone(), m));
            vs.push((e.name.clone(), e.dims.clone(), v));
        }
        Ok((ms, vs))
    }

    /// Sets one moment of parameter `name` (the other stays as it is: an 8-bit state
    /// requantizes the dequantized other moment to the same bytes).
    pub fn upload(&self, backend: &B, name: &str, which: Moment, values: &[f32]) -> Result<(), WeightsError> {
        let i = self
            .layout
            .index_of(name)
            .ok_or_else(|| WeightsError::UnknownTensor(name.to_string()))?;
        let e = &self.layout.entries()[i];
        if values.len() != e.len {
            return Err(WeightsError::Shape {
                name: name.to_string(),
                expected: e.dims.clone(),
                got: values.len(),
            });
        }
        match self.slots[i] {
            Slot::F32 { m, v } => {
                let at = if which == Moment::First { m } else { v };
                backend.upload(&self.f32s, at, &r1_core::backend::f32_bytes(values))?;
            }
            Slot::Blockwise8 { m, r } => {
                let (mut mf, mut vf) = self.download(backend, i)?;
                match which {
                    Moment::First => mf.copy_from_slice(values),
                    Moment::Second => vf.copy_from_slice(values),
                }
                let bytes = optim8::state_bytes(e.len);
                let mut states = vec![0u8; 2 * bytes];
                let (ms, rs) = states.split_at_mut(bytes);
                optim8::quantize_moments(&mf, &vf, ms, rs);
                backend.upload(&self.states, m, ms)?;
                backend.upload(&self.states, r, rs)?;
            }
        }
        Ok(())
    }

    /// Parameter `i`'s `(m, v)` as f32.
    fn download(&self, backend: &B, i: usize) -> Result<(Vec<f32>, Vec<f32>), BackendError> {
        let n = self.layout.entries()[i].len;
        match self.slots[i] {
            Slot::F32 { m, .. } => {
                let mut bytes = vec![0u8; 8 * n];
                backend.download(&self.f32s, m, &mut bytes)?;
                let mut all = r1_core::backend::f32_from_bytes(&bytes);
                let v = all.split_off(n);
                Ok((all, v))
            }
            Slot::Blockwise8 { m, r } => {
                let bytes = optim8::state_bytes(n);
                let (mut ms, mut rs) = (vec![0u8; bytes], vec![0u8; bytes]);
                backend.download(&self.states, m, &mut ms)?;
                backend.download(&self.states, r, &mut rs)?;
                let (mut mf, mut vf) = (vec![0.0; n], vec![0.0; n]);
                optim8::dequantize_moments(&ms, &rs, &mut mf, &mut vf);
                Ok((mf, vf))
            }
        }
    }
}
