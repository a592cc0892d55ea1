//! The [`Collective`] over MPI's world communicator (Open MPI through rsmpi), for
//! `mpirun -n N r1host run`. MPI's default error handler ends the whole job on a failed
//! call, so the reductions here return only when they succeeded.

use mpi::collective::{CommunicatorCollectives, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::Equivalence;

use super::{Collective, CollectiveError};

/// MPI, initialised for this process: dropping it finalises MPI.
pub struct MpiSession {
    _universe: Universe,
    size: usize,
}

impl MpiSession {
    /// Initialises MPI. Every collective call comes from one training thread at a time, so
    /// `MPI_THREAD_SERIALIZED` is what it needs from the library.
    pub fn start() -> Result<MpiSession, String> {
        let (universe, provided) = mpi::initialize_with_threading(mpi::Threading::Serialized)
            .ok_or("MPI was already initialised in this process")?;
        if matches!(provided, mpi::Threading::Single | mpi::Threading::Funneled) {
            return Err(format!(
                "the MPI library offers thread level {provided:?}; r1host needs Serialized or Multiple"
            ));
        }
        let size = universe.world().size() as usize;
        Ok(MpiSession {
            _universe: universe,
            size,
        })
    }

    /// The world communicator as a [`Collective`].
    pub fn collective(&self) -> MpiCollective {
        let world = SimpleCommunicator::world();
        MpiCollective {
            rank: world.rank() as usize,
            size: self.size,
        }
    }

    /// Ends every process of the job (after an error on this one: the others would wait
    /// for it in their next reduction for ever).
    pub fn abort(&self, code: i32) -> ! {
        SimpleCommunicator::world().abort(code)
    }
}

/// `MPI_COMM_WORLD`'s reductions. It holds no MPI handle (the world communicator is looked
/// up per call), so it is `Send + Sync`; it must be used while its [`MpiSession`] lives.
#[derive(Clone, Copy, Debug)]
pub struct MpiCollective {
    rank: usize,
    size: usize,
}

impl MpiCollective {
    fn all_reduce<T: Equivalence + Copy>(&self, values: &mut [T], op: SystemOperation) {
        // MPI_Allreduce without MPI_IN_PLACE: the send side is a copy.
        let send = values.to_vec();
        SimpleCommunicator::world().all_reduce_into(&send[..], values, op);
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
        self.all_reduce(values, SystemOperation::sum());
        Ok(())
    }
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError> {
        self.all_reduce(values, SystemOperation::sum());
        Ok(())
    }
    fn all_reduce_max_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError> {
        self.all_reduce(values, SystemOperation::max());
        Ok(())
    }
    fn barrier(&self) -> Result<(), CollectiveError> {
        SimpleCommunicator::world().barrier();
        Ok(())
    }
}
