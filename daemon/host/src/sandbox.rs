//! What a driver host takes away from the plugin it runs, before the plugin is loaded (a
//! library's constructors run at load): the host runs as the daemon's user, so without this a
//! malicious plugin could read the master key in `data_dir`, signal or renice the daemon, or
//! connect to its control socket as the daemon's own user.
//!
//! - **Files** (Landlock, Linux 5.13+; what the kernel supports of it): reading the system's
//!   directories (libraries, `/etc`, `/proc`, `/sys`), reading and writing device files under
//!   `/dev` (serial ports), reading the paths the daemon names (the plugin, its libraries, the
//!   LSL configuration), and nothing else: not `data_dir`, `/run`, `/tmp`, `/home`, `/var`.
//!   Files the daemon passes as descriptors were opened before and stay usable. On Linux 6.12+
//!   Landlock also keeps signals and abstract Unix sockets within the host.
//! - **Other processes** (a seccomp filter, any kernel): signals only to itself, scheduling,
//!   priority and resource limits only of itself, no Unix-domain sockets (the control socket,
//!   D-Bus, the journal, the service manager's notify socket), no ptrace, no reading or writing
//!   another process's memory, no kernel keyrings, no typing into a terminal (TIOCSTI,
//!   TIOCLINUX). Refused calls fail with EPERM.

use std::collections::BTreeMap;
use std::path::PathBuf;

use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use seccompiler::{SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule};

/// The system's directories a plugin may read (those missing here are skipped).
const SYSTEM_READABLE: &[&str] =
    &["/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/opt", "/proc", "/sys", "/run/udev"];

/// Restricts this process (every thread) for good; `readable`: paths the daemon lets the plugin
/// read besides the system's. Returns what was enforced, in words. An error means the host must
/// not load the plugin.
pub fn apply(readable: &[PathBuf]) -> Result<String, String> {
    let files = restrict_files(readable)?;
    restrict_calls()?;
    Ok(format!("{files}; system calls: filtered (seccomp)"))
}

/// Landlock, as far as this kernel has it: `Ok` with what was enforced.
fn restrict_files(readable: &[PathBuf]) -> Result<String, String> {
    // The newest ABI this code was written for; an older kernel enforces what it knows.
    let abi = ABI::V6;
    let read = AccessFs::from_read(abi);
    // Device files: read, write and their ioctls (a serial port's settings); no creating,
    // removing or renaming anything under /dev (its /dev/shm is writable by everyone).
    let device = read | AccessFs::WriteFile | AccessFs::IoctlDev;
    let fail = |e: landlock::RulesetError| format!("cannot set up its file-system sandbox (Landlock): {e}");
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(fail)?
        .scope(Scope::Signal | Scope::AbstractUnixSocket)
        .map_err(fail)?
        .create()
        .map_err(fail)?
        .add_rules(path_beneath_rules(SYSTEM_READABLE, read))
        .map_err(fail)?
        .add_rules(path_beneath_rules(readable, read))
        .map_err(fail)?
        .add_rules(path_beneath_rules(["/dev"], device))
        .map_err(fail)?
        .restrict_self()
        .map_err(fail)?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "files: confined (Landlock)".to_string(),
        RulesetStatus::PartiallyEnforced => "files: confined (Landlock; this kernel enforces part of it)".to_string(),
        RulesetStatus::NotEnforced => {
            "files: NOT confined (this kernel has no Landlock: Linux 5.13 or later with `landlock` in its lsm= list)"
                .to_string()
        }
    })
}

/// The seccomp filter: calls that reach other processes of the same user are refused (EPERM),
/// but those aimed at this process itself.
fn restrict_calls() -> Result<(), String> {
    fn fail(e: impl std::fmt::Display) -> String {
        format!("cannot set up its system-call filter (seccomp): {e}")
    }
    // SAFETY: getpid has no preconditions.
    let me = i64::from(unsafe { libc::getpid() });
    // A rule matches (and the call is refused) when all its conditions hold.
    let rule = |conds: &[(u8, SeccompCmpOp, i64)]| -> Result<SeccompRule, seccompiler::BackendError> {
        let conds = conds
            .iter()
            // pid_t and int arguments: their low 32 bits, as the kernel reads them.
            .map(|(arg, op, v)| SeccompCondition::new(*arg, SeccompCmpArgLen::Dword, op.clone(), u64::from(*v as u32)))
            .collect::<Result<Vec<_>, _>>()?;
        SeccompRule::new(conds)
    };
    use SeccompCmpOp::Ne;
    // The target of argument `arg` is not this process (0 means the caller itself).
    let not_self = |arg: u8| rule(&[(arg, Ne, 0), (arg, Ne, me)]);
    let build = || -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::BackendError> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        // Signals: to itself or its own process group (the host leads a session of its own).
        rules.insert(libc::SYS_kill, vec![rule(&[(0, Ne, 0), (0, Ne, me), (0, Ne, -me)])?]);
        for call in [libc::SYS_tgkill, libc::SYS_rt_sigqueueinfo, libc::SYS_rt_tgsigqueueinfo, libc::SYS_pidfd_open] {
            rules.insert(call, vec![rule(&[(0, Ne, me)])?]);
        }
        // SIGIO/SIGURG to another process: a descriptor's owner only itself or its group.
        const F_SETOWN_EX: i64 = 15;
        rules.insert(
            libc::SYS_fcntl,
            vec![
                rule(&[(1, SeccompCmpOp::Eq, i64::from(libc::F_SETOWN)), (2, Ne, 0), (2, Ne, me), (2, Ne, -me)])?,
                rule(&[(1, SeccompCmpOp::Eq, F_SETOWN_EX)])?,
            ],
        );
        // Scheduling, priority and limits: of itself (`who`/`pid` 0 or its own pid).
        for call in [
            libc::SYS_sched_setaffinity,
            libc::SYS_sched_setscheduler,
            libc::SYS_sched_setparam,
            libc::SYS_sched_setattr,
            libc::SYS_prlimit64,
            libc::SYS_migrate_pages,
            libc::SYS_move_pages,
        ] {
            rules.insert(call, vec![not_self(0)?]);
        }
        // setpriority(which, who, …) and ioprio_set(which, who, …): only PRIO_PROCESS /
        // IOPRIO_WHO_PROCESS of itself (a group or a user would include the daemon).
        rules.insert(libc::SYS_setpriority, vec![rule(&[(0, Ne, libc::PRIO_PROCESS as i64)])?, not_self(1)?]);
        rules.insert(libc::SYS_ioprio_set, vec![rule(&[(0, Ne, 1)])?, not_self(1)?]);
        // Typing into a terminal (TIOCSTI) or pasting on a console (TIOCLINUX): with /dev open
        // for serial ports, a `--user` daemon's host could reach its user's terminals.
        // FIOSETOWN and SIOCSPGRP set a descriptor's SIGIO owner, as F_SETOWN does.
        const FIOSETOWN: i64 = 0x8901;
        const SIOCSPGRP: i64 = 0x8902;
        let ioctls = [libc::TIOCSTI as i64, libc::TIOCLINUX as i64, FIOSETOWN, SIOCSPGRP];
        rules.insert(
            libc::SYS_ioctl,
            ioctls.iter().map(|&r| rule(&[(1, SeccompCmpOp::Eq, r)])).collect::<Result<_, _>>()?,
        );
        // Unix-domain sockets: the control socket, D-Bus, the journal, the notify socket (a
        // datagram socket pair's end could send to a path too).
        let unix = i64::from(libc::AF_UNIX);
        rules.insert(libc::SYS_socket, vec![rule(&[(0, SeccompCmpOp::Eq, unix)])?]);
        // Stream pairs stay (tokio's signal handling makes one; a connected stream reaches no
        // path); every other type goes (datagram, seqpacket, and SOCK_RAW, which the kernel
        // makes a datagram pair).
        let kind = |t: i64| rule(&[(0, SeccompCmpOp::Eq, unix), (1, SeccompCmpOp::MaskedEq(0xf), t)]);
        let stream = i64::from(libc::SOCK_STREAM);
        rules.insert(libc::SYS_socketpair, (0..16).filter(|t| *t != stream).map(kind).collect::<Result<_, _>>()?);
        // A child of the daemon's (CLONE_PARENT) would outlive the host as the daemon's zombie.
        let parent = libc::CLONE_PARENT as u64;
        rules.insert(
            libc::SYS_clone,
            vec![SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(parent),
                parent,
            )?])?],
        );
        // Nothing of another process's memory, descriptors or keys.
        for call in [
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
            libc::SYS_process_madvise,
            libc::SYS_pidfd_getfd,
            libc::SYS_pidfd_send_signal,
            libc::SYS_tkill,
            libc::SYS_kcmp,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            // io_uring's operations (a socket, a connect) would pass no filter at all.
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
            // Leaving the host's process group: the daemon ends a host by killing its group, so
            // a plugin's children must stay in it.
            libc::SYS_setsid,
            libc::SYS_setpgid,
        ] {
            rules.insert(call, vec![]);
        }
        Ok(rules)
    };
    let arch = std::env::consts::ARCH.try_into().map_err(fail)?;
    let filter = SeccompFilter::new(
        build().map_err(fail)?,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(fail)?;
    let program: seccompiler::BpfProgram = filter.try_into().map_err(fail)?;
    seccompiler::apply_filter_all_threads(&program).map_err(fail)?;
    // clone3 passes its flags in memory, out of a filter's sight: "not implemented", so that
    // glibc falls back to clone, whose flags the filter above checks.
    // (Installed after the main filter: of two errno answers the kernel takes the newest's.)
    let no_clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        std::env::consts::ARCH.try_into().map_err(fail)?,
    )
    .map_err(fail)?;
    let program: seccompiler::BpfProgram = no_clone3.try_into().map_err(fail)?;
    seccompiler::apply_filter_all_threads(&program).map_err(fail)?;
    refuse_x32().map_err(fail)
}

/// x32 system calls: numbered with bit 30 set under the x86-64 architecture tag, they would match
/// none of the rules above (seccompiler knows only x86-64's numbers). A second filter refuses
/// them all (the kernel applies every filter; the strictest answer wins).
#[cfg(target_arch = "x86_64")]
fn refuse_x32() -> Result<(), seccompiler::Error> {
    use seccompiler::sock_filter;
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let op = |code: u16, jt: u8, jf: u8, k: u32| sock_filter { code, jt, jf, k };
    let (ld_abs_w, jeq_k, jge_k, ret_k) = (0x20, 0x15, 0x35, 0x06);
    let program = vec![
        op(ld_abs_w, 0, 0, 4), // seccomp_data.arch
        op(jeq_k, 0, 3, AUDIT_ARCH_X86_64),
        op(ld_abs_w, 0, 0, 0), // seccomp_data.nr
        op(jge_k, 0, 1, X32_SYSCALL_BIT),
        op(ret_k, 0, 0, 0x0005_0000 | libc::EPERM as u32), // SECCOMP_RET_ERRNO
        op(ret_k, 0, 0, 0x7fff_0000),                      // SECCOMP_RET_ALLOW
    ];
    seccompiler::apply_filter_all_threads(&program)
}

#[cfg(not(target_arch = "x86_64"))]
fn refuse_x32() -> Result<(), seccompiler::Error> {
    Ok(())
}
