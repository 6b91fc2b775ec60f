//! The training command as a child process: started with the `SM_*` environment,
//! sent the signals that `chute run` receives, stopped (SIGTERM, then SIGKILL after
//! a grace period) when the job must end without it, and waited for, its exit
//! status becoming `chute run`'s.
//!
//! The command runs in a process group of its own. On a terminal, that group is
//! handed the terminal, as a shell does for a foreground job: a Ctrl-C reaches the
//! command and its workers directly and never `chute run`, so every SIGINT, SIGTERM,
//! SIGHUP or SIGQUIT that `chute run` does receive came from someone who meant it
//! (`docker kill -s INT`, `docker stop`, a closed session) and is forwarded to the
//! command once. Signals go to the command only, not its group, as `docker stop`
//! delivers them to the entrypoint only: the command decides how to pass them on.
//! Only the SIGKILL at the end of a grace period goes to the whole group, so that no
//! worker is left holding a FIFO or a mount.

use std::ffi::OsString;
use std::future::Future;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

use crate::error::RunError;

/// The signals `chute run` catches from its start, so that none kills it half-way
/// through bringing channels up (which would leave mounts behind) or orphans the
/// command: SIGINT, SIGTERM, SIGHUP and SIGQUIT.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// The next signal's number.
    pub async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => Signal::SIGTERM as i32,
            _ = self.int.recv() => Signal::SIGINT as i32,
            _ = self.hup.recv() => Signal::SIGHUP as i32,
            _ = self.quit.recv() => Signal::SIGQUIT as i32,
        }
    }
}

/// The running command, and the terminal it was handed, if any.
pub struct Running {
    child: Child,
    /// The command's process group (its own pid).
    pgid: Option<Pid>,
    /// Our own process group, to take the terminal back when the command ends.
    terminal_owner: Option<Pid>,
}

/// Starts `command` (program and arguments) with `env` added to ours, in a process
/// group of its own that gets the terminal if we had it.
pub fn spawn(command: &[OsString], env: &[(String, String)]) -> Result<Running, RunError> {
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
        .process_group(0)
        .kill_on_drop(false);
    let we_had_terminal = in_terminal_foreground();
    let child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: format!("'{}'", program.to_string_lossy()),
        source,
    })?;
    let pgid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(Pid::from_raw);
    let mut terminal_owner = None;
    if let (true, Some(pgid)) = (we_had_terminal, pgid) {
        match give_terminal(pgid) {
            Ok(()) => terminal_owner = Some(nix::unistd::getpgrp()),
            Err(e) => tracing::debug!("cannot hand the terminal to the command: {e}"),
        }
    }
    Ok(Running {
        child,
        pgid,
        terminal_owner,
    })
}

/// Why `chute run` ended the command itself.
#[derive(Debug)]
pub enum StopReason<F> {
    /// `MaxRuntimeInSeconds` elapsed.
    MaxRuntime(Duration),
    /// A channel failed (a Pipe epoch that cannot be completed, a mount that died).
    Channel(F),
}

/// How the command ended.
#[derive(Debug)]
pub struct Ended<F> {
    /// Its exit status.
    pub status: ExitStatus,
    /// Set when `chute run` stopped it.
    pub stopped: Option<StopReason<F>>,
}

/// When and how to stop the command without being asked by a signal.
pub struct Limits {
    /// `MaxRuntimeInSeconds`, counted from the command's start.
    pub max_runtime: Option<Duration>,
    /// Between SIGTERM and SIGKILL.
    pub grace: Duration,
}

impl Running {
    /// Waits for the command, forwarding the signals we receive meanwhile. When
    /// `failure` resolves or the run time runs out, the command is sent SIGTERM,
    /// and its whole process group SIGKILL if it is still there after the grace
    /// period.
    pub async fn supervise<F>(
        &mut self,
        signals: &mut Signals,
        limits: &Limits,
        failure: impl Future<Output = F>,
    ) -> std::io::Result<Ended<F>> {
        let deadline = limits.max_runtime.map(|d| Instant::now() + d);
        let mut failure = std::pin::pin!(failure);
        let mut stopped: Option<StopReason<F>> = None;
        let mut kill_at: Option<Instant> = None;
        let status = loop {
            tokio::select! {
                status = self.child.wait() => break status?,
                signo = signals.recv() => self.forward(signo),
                _ = sleep_until(deadline), if stopped.is_none() && deadline.is_some() => {
                    let limit = limits.max_runtime.unwrap_or_default();
                    tracing::error!(
                        "the command has run for its MaxRuntimeInSeconds ({}s): stopping it \
                         (SIGTERM, SIGKILL after {}s)",
                        limit.as_secs(),
                        limits.grace.as_secs()
                    );
                    stopped = Some(StopReason::MaxRuntime(limit));
                    kill_at = Some(self.terminate(limits.grace));
                }
                f = &mut failure, if stopped.is_none() => {
                    tracing::error!(
                        "a channel failed: stopping the command (SIGTERM, SIGKILL after {}s) \
                         so that it does not go on with incomplete data",
                        limits.grace.as_secs()
                    );
                    stopped = Some(StopReason::Channel(f));
                    kill_at = Some(self.terminate(limits.grace));
                }
                _ = sleep_until(kill_at), if kill_at.is_some() => {
                    tracing::error!("the command did not exit within {}s of SIGTERM: SIGKILL", limits.grace.as_secs());
                    self.kill_group();
                    kill_at = None;
                }
            }
        };
        if stopped.is_some() {
            // Workers of a command we had to stop must not outlive the job.
            self.kill_group();
        }
        self.take_terminal_back();
        Ok(Ended { status, stopped })
    }

    fn forward(&self, signo: i32) {
        let Some(pid) = self.pid() else { return };
        let Ok(sig) = Signal::try_from(signo) else {
            return;
        };
        match kill(pid, sig) {
            Ok(()) => tracing::info!("forwarded {sig} to the command (pid {pid})"),
            // The child may have exited between the signal and now.
            Err(e) => tracing::debug!("could not forward {sig} to pid {pid}: {e}"),
        }
    }

    /// Sends SIGTERM; returns when to send SIGKILL.
    fn terminate(&self, grace: Duration) -> Instant {
        if let Some(pid) = self.pid() {
            if let Err(e) = kill(pid, Signal::SIGTERM) {
                tracing::debug!("could not send SIGTERM to pid {pid}: {e}");
            }
        }
        Instant::now() + grace
    }

    fn kill_group(&self) {
        if let Some(pgid) = self.pgid {
            // ESRCH: the group is already gone, which is the aim.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    fn pid(&self) -> Option<Pid> {
        self.child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .map(Pid::from_raw)
    }

    fn take_terminal_back(&mut self) {
        if let Some(ours) = self.terminal_owner.take() {
            if let Err(e) = give_terminal(ours) {
                tracing::debug!("cannot take the terminal back: {e}");
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// True when we are in the foreground process group of the terminal on stdin.
fn in_terminal_foreground() -> bool {
    let stdin = std::io::stdin();
    match nix::unistd::tcgetpgrp(stdin.as_fd()) {
        Ok(fg) => fg == nix::unistd::getpgrp(),
        Err(_) => false,
    }
}

/// Makes `pgid` the terminal's foreground group. SIGTTOU is blocked around the
/// call: once the command has the terminal we are a background group, and the
/// kernel would otherwise stop us for taking it back.
fn give_terminal(pgid: Pid) -> nix::Result<()> {
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old))?;
    let res = nix::unistd::tcsetpgrp(std::io::stdin().as_fd(), pgid);
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    res
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
