//! Data-parallel training's one seam: a [`Collective`] says which of how many processes
//! this is and sums values across them. [`Single`] (one process, every call a no-op) is
//! what runs by default; with the `mpi` cargo feature, `r1host` started by `mpirun`
//! installs [`mpi::MpiCollective`] as the process's [`world`]. An NCCL implementation
//! (through cudarc) is the same trait over device buffers when the CUDA backend lands.

use std::ops::Range;
use std::sync::OnceLock;

use r1_core::backend::{Backend, BackendError, f32_bytes, f32_from_bytes};

use crate::weights::ParamBuffer;

#[cfg(feature = "mpi")]
pub mod mpi;

/// A collective operation failed (a lost peer, a transport error).
#[derive(Debug, thiserror::Error)]
#[error("collective `{op}` across {size} processes failed: {detail}")]
pub struct CollectiveError {
    pub op: &'static str,
    pub size: usize,
    pub detail: String,
}

/// Summing gradients failed: moving them to or from the backend, or the collective.
#[derive(Debug, thiserror::Error)]
pub enum ReduceError {
    #[error("summing gradients over processes: {0}")]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Collective(#[from] CollectiveError),
}

/// The processes of one data-parallel run. Every process calls each operation in the same
/// order with buffers of the same length; each returns when all have contributed.
pub trait Collective: Send + Sync {
    /// This process's index, `0..size()`; rank 0 writes the run's files.
    fn rank(&self) -> usize;
    /// How many processes take part.
    fn size(&self) -> usize;
    /// Replaces `values` by their element-wise sum over every process.
    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError>;
    /// Replaces `values` by their element-wise sum over every process.
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError>;
    /// Replaces `values` by their element-wise maximum over every process.
    fn all_reduce_max_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError>;
    /// Returns once every process has called it.
    fn barrier(&self) -> Result<(), CollectiveError>;

    /// Whether this process writes the run's files (metrics, samples, checkpoints).
    fn is_writer(&self) -> bool {
        self.rank() == 0
    }

    /// Whether any process says `yes` (a stop request must end every process at the same
    /// step, or the others wait in their next sum for ever).
    fn any(&self, yes: bool) -> Result<bool, CollectiveError> {
        let mut v = [f64::from(u8::from(yes))];
        self.all_reduce_max_f64(&mut v)?;
        Ok(v[0] > 0.0)
    }
}

/// One process: rank 0 of 1, every reduction the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum_f32(&self, _: &mut [f32]) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn all_reduce_max_f64(&self, _: &mut [f64]) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn barrier(&self) -> Result<(), CollectiveError> {
        Ok(())
    }
}

static WORLD: OnceLock<Box<dyn Collective>> = OnceLock::new();

/// The processes this one runs with: what [`install`] set, else [`Single`].
pub fn world() -> &'static dyn Collective {
    match WORLD.get() {
        Some(c) => c.as_ref(),
        None => &Single,
    }
}

/// Makes `collective` the process's [`world`] (once, before any training starts); refused
/// when one is already installed.
pub fn install(collective: Box<dyn Collective>) -> Result<(), &'static str> {
    WORLD
        .set(collective)
        .map_err(|_| "a collective is already installed for this process")
}

/// How many processes `mpirun` (Open MPI) says this one was started among, from its
/// environment; `None` outside `mpirun`.
pub fn launched_size() -> Option<usize> {
    std::env::var("OMPI_COMM_WORLD_SIZE").ok()?.parse().ok()
}

/// What `r1host` started with: MPI, when it was launched by `mpirun` and built with the
/// `mpi` feature. Keep it until the process ends (dropping it finalises MPI).
pub struct Launch {
    #[cfg(feature = "mpi")]
    mpi: Option<mpi::MpiSession>,
}

impl Launch {
    /// Starts MPI and installs it as the [`world`] when `mpirun` launched this process (a
    /// plain run of an `mpi` build stays one process); refuses a launch by `mpirun` with
    /// several processes in a build without the feature, whose processes would each run
    /// the whole job and write the same files.
    pub fn start() -> Result<Launch, String> {
        let launched = launched_size();
        #[cfg(feature = "mpi")]
        {
            let mpi = match launched {
                Some(_) => {
                    let session = mpi::MpiSession::start()?;
                    install(Box::new(session.collective()))?;
                    Some(session)
                }
                None => None,
            };
            Ok(Launch { mpi })
        }
        #[cfg(not(feature = "mpi"))]
        match launched {
            Some(n) if n > 1 => Err(format!(
                "started by mpirun with {n} processes, but this r1host was built without MPI \
                 (build it with `--features mpi`)"
            )),
            _ => Ok(Launch {}),
        }
    }

    /// After an error on this process: ends the whole MPI job (the other processes would
    /// wait for this one in their next reduction for ever); nothing with one process.
    pub fn fail(&self) {
        #[cfg(feature = "mpi")]
        if let Some(session) = &self.mpi
            && world().size() > 1
        {
            session.abort(1);
        }
    }
}

/// The groups `rank` of `size` generates out of a round's `groups`: a contiguous share,
/// the first `groups % size` ranks one group more than the others.
pub fn group_share(groups: usize, rank: usize, size: usize) -> Range<usize> {
    let (base, extra) = (groups / size, groups % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// A contiguous run of one process's rows that lies in one micro-batch of the whole
/// generation batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The micro-batch of the whole batch (rows `micro · size ..` of it) this part is in.
    pub micro: usize,
    /// The part's rows, as indices into this process's rows.
    pub rows: Range<usize>,
}

/// Cuts this process's rows — rows `first .. first + rows` of a generation batch of
/// `total` rows — at the boundaries of the batch's micro-batches of `micro_size` rows, so
/// each part is scored with the normaliser of the micro-batch it belongs to. One process
/// (`first = 0`, `rows = total`) gets the micro-batches themselves.
pub fn micro_parts(first: usize, rows: usize, micro_size: usize) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut at = first;
    while at < first + rows {
        let micro = at / micro_size;
        let end = ((micro + 1) * micro_size).min(first + rows);
        parts.push(Part {
            micro,
            rows: at - first..end - first,
        });
        at = end;
    }
    parts
}

/// Sums the accumulated gradient in `grads` over every process (`have`: whether this
/// process accumulated any this step; one that did not contributes zeros). The gradient
/// goes through host memory: a CPU backend's buffers already are host memory, and a device
/// collective (NCCL) would implement this seam on device buffers instead.
pub fn all_reduce_gradients<B: Backend>(
    collective: &dyn Collective,
    backend: &B,
    grads: &ParamBuffer<B>,
    have: bool,
) -> Result<(), ReduceError> {
    let floats = grads.layout.total_floats();
    let mut values = if have {
        let mut bytes = vec![0u8; floats * 4];
        backend.download(&grads.buffer, 0, &mut bytes)?;
        f32_from_bytes(&bytes)
    } else {
        vec![0.0f32; floats]
    };
    collective.all_reduce_sum_f32(&mut values)?;
    backend.upload(&grads.buffer, 0, &f32_bytes(&values))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_shares_are_contiguous_and_cover_every_group_once() {
        for groups in 1..20 {
            for size in 1..6 {
                let shares: Vec<Range<usize>> = (0..size).map(|r| group_share(groups, r, size)).collect();
                assert_eq!(shares[0].start, 0);
                assert_eq!(shares[size - 1].end, groups);
                for w in shares.windows(2) {
                    assert_eq!(w[0].end, w[1].start, "{groups} groups over {size}");
                    assert!(w[0].len() >= w[1].len() && w[0].len() - w[1].len() <= 1);
                }
            }
        }
        assert_eq!(group_share(5, 0, 2), 0..3);
        assert_eq!(group_share(5, 1, 2), 3..5);
    }

    #[test]
    fn one_process_gets_the_micro_batches_themselves() {
        let parts = micro_parts(0, 10, 4);
        assert_eq!(
            parts,
            vec![
                Part { micro: 0, rows: 0..4 },
                Part { micro: 1, rows: 4..8 },
                Part { micro: 2, rows: 8..10 },
            ]
        );
    }

    #[test]
    fn a_share_is_cut_where_the_whole_batch_cuts_its_micro_batches() {
        // Rows 6..14 of a batch in micro-batches of 4: rows 6..8 end micro-batch 1, rows
        // 8..12 are micro-batch 2, rows 12..14 start micro-batch 3.
        let parts = micro_parts(6, 8, 4);
        assert_eq!(
            parts,
            vec![
                Part { micro: 1, rows: 0..2 },
                Part { micro: 2, rows: 2..6 },
                Part { micro: 3, rows: 6..8 },
            ]
        );
        assert!(micro_parts(3, 0, 4).is_empty());
    }

    /// Two processes in one: each "process" sums with a fixed other's values.
    struct Pair {
        other: Vec<f32>,
    }

    impl Collective for Pair {
        fn rank(&self) -> usize {
            1
        }
        fn size(&self) -> usize {
            2
        }
        fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
            values.iter_mut().zip(&self.other).for_each(|(v, o)| *v += o);
            Ok(())
        }
        fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<(), CollectiveError> {
            unreachable!("not used by the gradient sum")
        }
        fn all_reduce_max_f64(&self, _: &mut [f64]) -> Result<(), CollectiveError> {
            unreachable!("not used by the gradient sum")
        }
        fn barrier(&self) -> Result<(), CollectiveError> {
            Ok(())
        }
    }

    #[test]
    fn gradients_are_summed_in_place_and_a_process_without_any_adds_zeros() {
        use r1_core::model::ParamSpec;
        let backend = r1_backend_cpu::CpuBackend::new();
        let spec = |name: &str, n: usize| ParamSpec {
            name: name.into(),
            dims: vec![n],
        };
        let layout = crate::weights::ParamLayout::new(&[spec("a", 3), spec("b", 2)]);
        let grads = ParamBuffer::zeros(&backend, layout).expect("grads");
        grads.upload(&backend, "a", &[1.0, 2.0, 3.0]).expect("upload");
        grads.upload(&backend, "b", &[-1.0, 0.5]).expect("upload");
        let pair = Pair {
            other: vec![10.0; grads.layout.total_floats()],
        };
        all_reduce_gradients(&pair, &backend, &grads, true).expect("sum");
        assert_eq!(grads.download(&backend, "a").expect("a"), [11.0, 12.0, 13.0]);
        assert_eq!(grads.download(&backend, "b").expect("b"), [9.0, 10.5]);
        // A process that scored no rows this step: its stale buffer must not count.
        all_reduce_gradients(&pair, &backend, &grads, false).expect("sum");
        assert_eq!(grads.download(&backend, "a").expect("a"), [10.0; 3]);
        assert_eq!(grads.download(&backend, "b").expect("b"), [10.0; 2]);
    }

    #[test]
    fn the_single_process_collective_is_rank_zero_of_one_and_leaves_values_alone() {
        let c = Single;
        assert_eq!((c.rank(), c.size()), (0, 1));
        assert!(c.is_writer());
        let mut v = [1.5f32, -2.0];
        c.all_reduce_sum_f32(&mut v).expect("no-op");
        assert_eq!(v, [1.5, -2.0]);
        let mut w = [3.0f64];
        c.all_reduce_sum_f64(&mut w).expect("no-op");
        c.all_reduce_max_f64(&mut w).expect("no-op");
        assert_eq!(w, [3.0]);
        assert!(c.any(true).expect("no-op"));
        assert!(!c.any(false).expect("no-op"));
        assert_eq!(world().size(), 1, "nothing installed in unit tests");
    }
}
