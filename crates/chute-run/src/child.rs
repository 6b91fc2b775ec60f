//! The training command as a child process: started with the `SM_*` environment,
//! sent the SIGINT/SIGTERM that `chute run` receives, and waited for, its exit
//! status becoming `chute run`'s.
//!
//! Signals are forwarded to the child only, not to its process group, as `docker
//! stop` delivers them to the entrypoint only: the command decides how to pass
//! them on to its own workers. One exception avoids a double interrupt: a SIGINT
//! typed on a terminal already reaches the child (it shares our foreground
//! process group), so it is not sent again.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use crate::error::RunError;

/// SIGINT and SIGTERM, caught from the start of `chute run` so that neither kills
/// it half-way through bringing channels up (which would leave mounts behind).
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next signal's number.
    pub async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => libc_signo(Signal::SIGTERM),
            _ = self.int.recv() => libc_signo(Signal::SIGINT),
        }
    }
}

fn libc_signo(s: Signal) -> i32 {
    s as i32
}

/// Starts `command` (program and arguments) with `env` added to ours.
pub fn spawn(command: &[OsString], env: &[(String, String)]) -> Result<Child, RunError> {
    let Some((program, args)) = command.split_first() else {
        return Err(RunError::Usage(
            "no command given: write chute run [OPTIONS] -- CMD ARGS...".into(),
        ));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(false);
    cmd.spawn().map_err(|source| RunError::Spawn {
        program: format!("'{}'", program.to_string_lossy()),
        source,
    })
}

/// Waits for the child, forwarding the signals we receive meanwhile; returns its
/// exit status.
pub async fn supervise(child: &mut Child, signals: &mut Signals) -> std::io::Result<ExitStatus> {
    loop {
        tokio::select! {
            status = child.wait() => return status,
            signo = signals.recv() => forward(child, signo),
        }
    }
}

fn forward(child: &Child, signo: i32) {
    let Some(pid) = child.id() else { return };
    let Ok(sig) = Signal::try_from(signo) else {
        return;
    };
    if sig == Signal::SIGINT && interrupt_reaches_child_directly() {
        tracing::info!("SIGINT from the terminal reached the command directly");
        return;
    }
    let Ok(pid) = i32::try_from(pid) else { return };
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) => tracing::info!("forwarded {sig} to the command (pid {pid})"),
        // The child may have exited between the signal and now.
        Err(e) => tracing::debug!("could not forward {sig} to pid {pid}: {e}"),
    }
}

/// True when we are in the foreground process group of the terminal on stdin:
/// then the terminal's SIGINT went to the whole group, the child included.
fn interrupt_reaches_child_directly() -> bool {
    let stdin = std::io::stdin();
    match nix::unistd::tcgetpgrp(&stdin) {
        Ok(fg) => fg == nix::unistd::getpgrp(),
        Err(_) => false,
    }
}

/// The exit code `chute run` reports for the command's status: its own code, or
/// 128 + the signal that killed it, as shells report it.
pub fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        // Exit codes are 0..=255 on Unix; the cast keeps the low byte as wait() does.
        return code as u8;
    }
    match status.signal() {
        Some(sig) => 128u8.saturating_add(sig as u8),
        None => 1,
    }
}
