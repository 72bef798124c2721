//! Landlock: the instance sees its own data directory read-write and a few paths read-only;
//! TCP bind only on its own ports, TCP connect only when it runs a p2p node; no signals or abstract
//! sockets outside its domain.

use landlock::{
    Access,
    AccessFs, AccessNet, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::{Error, Plan};

/// The newest ABI we know; the crate downgrades to what the kernel has (best effort) and the
/// returned status says what was enforced.
const TARGET_ABI: ABI = ABI::V6;

pub(crate) fn restrict(plan: &Plan) -> Result<String, Error> {
    let err = |e: &dyn std::fmt::Display| Error::Landlock(e.to_string());
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .map_err(|e| err(&e))?
        .handle_access(if plan.tcp_connect_any { AccessNet::BindTcp.into() } else { AccessNet::BindTcp | AccessNet::ConnectTcp })
        .map_err(|e| err(&e))?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(|e| err(&e))?
        .create()
        .map_err(|e| err(&e))?;
    let data = PathFd::new(&plan.data_dir).map_err(|e| err(&e))?;
    ruleset = ruleset.add_rule(PathBeneath::new(data, AccessFs::from_all(TARGET_ABI))).map_err(|e| err(&e))?;
    for path in &plan.read_only {
        // A read-only path that does not exist on this host (e.g. /lib64) is simply skipped.
        let Ok(fd) = PathFd::new(path) else { continue };
        let access = if path.is_dir() { AccessFs::from_read(TARGET_ABI) } else { AccessFs::from_file(TARGET_ABI) & AccessFs::from_read(TARGET_ABI) };
        ruleset = ruleset.add_rule(PathBeneath::new(fd, access)).map_err(|e| err(&e))?;
    }
    for port in &plan.tcp_bind_ports {
        ruleset = ruleset.add_rule(NetPort::new(*port, AccessNet::BindTcp)).map_err(|e| err(&e))?;
    }
    let status = ruleset.restrict_self().map_err(|e| err(&e))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "fully enforced".to_owned(),
        RulesetStatus::PartiallyEnforced => "partially enforced (older kernel ABI)".to_owned(),
        RulesetStatus::NotEnforced => "not enforced (kernel has no landlock)".to_owned(),
    })
}
