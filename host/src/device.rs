//! Which device a command runs its model on (`--device cpu|cuda[:N]`), and the one place
//! that turns that choice into a concrete backend. Everything below this point is
//! generic over `B: Backend`; the CLI dispatches once, here, at the top of a command.

use std::fmt;
use std::str::FromStr;

use r1_backend_cpu::CpuBackend;
use r1_core::backend::Backend;

/// A compute device named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    /// The CPU backend (SIMD kernels, all cores).
    #[default]
    Cpu,
    /// CUDA device `N` (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map(Device::Cuda)
                    .map_err(|_| format!("`{other}`: the CUDA device index must be a number (cuda:0, cuda:1, …)")),
                None => Err(format!("`{other}` is not a device (expected cpu, cuda or cuda:N)")),
            },
        }
    }
}

/// What f32 matrix products compute in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compute {
    /// f32 products and sums.
    #[default]
    F32,
    /// Products past the decode sizes (training, scoring, prefill) take both operands
    /// rounded to bf16 and sum in f32 (AVX-512 BF16); weights, gradients and optimizer
    /// state stay f32.
    Bf16,
}

impl Compute {
    /// `backend` set up to compute as chosen (an error for bf16 on a CPU without
    /// AVX-512 BF16).
    pub fn apply(self, backend: CpuBackend) -> Result<CpuBackend, r1_core::BackendError> {
        match self {
            Compute::F32 => Ok(backend),
            Compute::Bf16 => backend.with_bf16_compute(),
        }
    }
}

/// The `--device` (and `--threads`, `--compute`) flags shared by every command that runs
/// a model.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct DeviceArgs {
    /// Where the model runs: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// CPU threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// `bf16`: matrix products of more than a decode step's rows in bf16 with f32 sums
    /// (CPUs with AVX-512 BF16; about twice the multiply-adds per instruction). Master
    /// weights, gradients and optimizer state stay f32.
    #[arg(long, value_enum, default_value = "f32")]
    pub compute: Compute,
}

/// A piece of work that runs on whatever backend the device names: the generic half of a
/// command. (A closure cannot be generic over the backend type, a trait method can.)
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Runs the job on `backend`.
    fn run<B: Backend>(self, backend: &B) -> anyhow::Result<Self::Output>
    where
        B::Buffer: Send + Sync;
}

/// Opens the backend `args` names and runs `job` on it.
pub fn with_backend<J: BackendJob>(args: &DeviceArgs, job: J) -> anyhow::Result<J::Output> {
    match args.device {
        Device::Cpu => {
            let backend = match args.threads {
                Some(t) => CpuBackend::with_threads(t)?,
                None => CpuBackend::new(),
            };
            job.run(&args.compute.apply(backend)?)
        }
        Device::Cuda(n) => Err(cuda_unavailable(n)),
    }
}

/// Why `cuda:N` cannot be used yet: the probe says whether a driver exists at all.
fn cuda_unavailable(n: usize) -> anyhow::Error {
    let reason = r1_backend_cuda::probe().reason();
    anyhow::anyhow!("device cuda:{n} cannot be used: {reason}; the CUDA kernels are not built yet (use --device cpu)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_from_their_command_line_names() {
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        assert_eq!("CUDA:3".parse::<Device>(), Ok(Device::Cuda(3)));
        assert!("cuda:x".parse::<Device>().unwrap_err().contains("must be a number"));
        assert!("tpu".parse::<Device>().unwrap_err().contains("not a device"));
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
    }

    struct Name;
    impl BackendJob for Name {
        type Output = String;
        fn run<B: Backend>(self, backend: &B) -> anyhow::Result<String>
        where
            B::Buffer: Send + Sync,
        {
            Ok(backend.name())
        }
    }

    #[test]
    fn cpu_runs_the_job_and_cuda_says_why_it_cannot() {
        let cpu = DeviceArgs {
            device: Device::Cpu,
            threads: Some(1),
            compute: Compute::F32,
        };
        assert!(with_backend(&cpu, Name).unwrap().starts_with("cpu"));
        let cuda = DeviceArgs {
            device: Device::Cuda(0),
            threads: None,
            compute: Compute::F32,
        };
        let err = with_backend(&cuda, Name).unwrap_err().to_string();
        assert!(err.contains("cuda:0 cannot be used"), "{err}");
        assert!(err.contains("not built yet"), "{err}");
    }
}
