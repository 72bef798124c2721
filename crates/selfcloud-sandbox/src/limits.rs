//! rlimits: the memory, file and process ceilings of one instance.

use nix::sys::resource::{setrlimit, Resource};

use crate::{Error, Plan};

pub(crate) fn apply(plan: &Plan) -> Result<(), Error> {
    let set = |resource, value: u64, what| setrlimit(resource, value, value).map_err(|source| Error::Sys { what, source });
    set(Resource::RLIMIT_AS, plan.memory_bytes, "RLIMIT_AS")?;
    set(Resource::RLIMIT_NOFILE, plan.open_files_max, "RLIMIT_NOFILE")?;
    // RLIMIT_NPROC counts every thread of the uid; with a shared uid (no root) it would count the
    // operator's other processes too, so only set it when the instance has its own uid.
    if plan.uid.is_some() && crate::is_root() {
        set(Resource::RLIMIT_NPROC, plan.processes_max, "RLIMIT_NPROC")?;
    }
    // No core dumps: they would write decrypted user data outside the store.
    set(Resource::RLIMIT_CORE, 0, "RLIMIT_CORE")?;
    Ok(())
}
