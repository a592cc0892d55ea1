//! r1-backend-cuda: the CUDA backend's crate. Its kernels (cudarc: driver, NVRTC,
//! cuBLAS) are the subject of their own issue; until then this crate only answers the
//! question the host asks at start-up — can CUDA be used here? — with a clear reason.
//! It loads the driver at run time, so it builds and tests on machines without CUDA.

use r1_core::BackendError;

/// What the host learns when it asks for CUDA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    /// No driver library could be loaded: no CUDA device on this machine.
    NoDevice { detail: String },
    /// A driver is present but r1's CUDA kernels are not built yet.
    NotBuilt { driver: String },
}

impl Availability {
    /// Why CUDA cannot be used, as a user-facing message.
    pub fn reason(&self) -> String {
        match self {
            Availability::NoDevice { detail } => format!("no CUDA device ({detail})"),
            Availability::NotBuilt { driver } => {
                format!("CUDA driver found ({driver}) but the CUDA backend is not built yet")
            }
        }
    }

    pub fn into_error(self) -> BackendError {
        BackendError::Unavailable(self.reason())
    }
}

/// Driver library names tried in order (Linux, then Windows).
const DRIVER_LIBRARIES: [&str; 3] = ["libcuda.so.1", "libcuda.so", "nvcuda.dll"];

/// Probes for the CUDA driver without initialising it.
pub fn probe() -> Availability {
    let mut errors = Vec::new();
    for name in DRIVER_LIBRARIES {
        // SAFETY: loading the NVIDIA driver library runs its initialisers, which is what
        // every CUDA application does; no symbol is called here.
        match unsafe { libloading::Library::new(name) } {
            Ok(_) => {
                return Availability::NotBuilt {
                    driver: name.to_string(),
                };
            }
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    Availability::NoDevice {
        detail: errors.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_gives_a_reason_a_user_can_act_on() {
        let a = probe();
        let reason = a.reason();
        match &a {
            Availability::NoDevice { .. } => {
                eprintln!("skipping CUDA checks: {reason}");
                assert!(reason.starts_with("no CUDA device"), "{reason}");
            }
            Availability::NotBuilt { .. } => assert!(reason.contains("not built yet"), "{reason}"),
        }
        assert!(matches!(a.into_error(), BackendError::Unavailable(_)));
    }
}
