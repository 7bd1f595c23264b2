//! [`ProgramError`]: why a program under test did not start, did not get
//! ready, or could not be stopped, with what it wrote.

use std::fmt;
use std::process::ExitStatus;
use std::time::Duration;

use super::Stream;

/// How much of each stream an error message shows (its end, where the
/// reason usually is); the fields keep all of it.
const SHOWN: usize = 4096;

/// Why a program under test did not start or get ready, or could not be
/// stopped. `Exited` and `Timeout` carry everything the program wrote on
/// its piped streams, and say it when displayed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProgramError {
    /// The program could not be started (not found, not executable, bad
    /// working directory); `source` says which.
    Spawn {
        /// The program, as given.
        program: String,
        /// The error from the subprocess transport.
        source: crate::Error,
    },
    /// The program exited while the test waited for it.
    Exited {
        /// The program, as given.
        program: String,
        /// What the test was waiting for, e.g. "print a line containing
        /// `listening` on stdout".
        waiting_for: String,
        /// How it exited.
        status: ExitStatus,
        /// All it wrote on stdout (empty unless piped).
        stdout: String,
        /// All it wrote on stderr (empty unless piped).
        stderr: String,
    },
    /// What the test waited for did not happen in time. When this comes
    /// from [`Program::start`](super::Program::start), the program has
    /// been killed and reaped.
    Timeout {
        /// The program, as given.
        program: String,
        /// What the test was waiting for.
        waiting_for: String,
        /// How long it was given.
        within: Duration,
        /// All it wrote on stdout so far.
        stdout: String,
        /// All it wrote on stderr so far.
        stderr: String,
    },
    /// The program could not be signalled or waited for (the loop was
    /// closed under it, for example).
    Stop {
        /// The program, as given.
        program: String,
        /// The error from the subprocess transport.
        source: crate::Error,
    },
}

impl ProgramError {
    /// The exit status, for [`Exited`](Self::Exited).
    pub fn status(&self) -> Option<ExitStatus> {
        match self {
            ProgramError::Exited { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// What the program wrote on `stream` (empty for `Spawn` and `Stop`).
    pub fn output(&self, stream: Stream) -> &str {
        match (self, stream) {
            (ProgramError::Exited { stdout, .. }, Stream::Stdout)
            | (ProgramError::Timeout { stdout, .. }, Stream::Stdout) => stdout,
            (ProgramError::Exited { stderr, .. }, Stream::Stderr)
            | (ProgramError::Timeout { stderr, .. }, Stream::Stderr) => stderr,
            _ => "",
        }
    }
}

impl fmt::Display for ProgramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProgramError::Spawn { program, source } => {
                write!(f, "could not start `{program}`: {source}")
            }
            ProgramError::Exited {
                program,
                waiting_for,
                status,
                stdout,
                stderr,
            } => {
                write!(
                    f,
                    "`{program}` exited ({status}) while the test waited for it to {waiting_for}"
                )?;
                write_output(f, stdout, stderr)
            }
            ProgramError::Timeout {
                program,
                waiting_for,
                within,
                stdout,
                stderr,
            } => {
                write!(f, "`{program}` did not {waiting_for} within {within:?}")?;
                write_output(f, stdout, stderr)
            }
            ProgramError::Stop { program, source } => {
                write!(f, "could not stop `{program}`: {source}")
            }
        }
    }
}

/// Both streams, each under a header and cut to its last [`SHOWN`] bytes.
pub(super) fn write_output(f: &mut impl fmt::Write, stdout: &str, stderr: &str) -> fmt::Result {
    for (name, text) in [("stdout", stdout), ("stderr", stderr)] {
        let text = text.trim_end();
        if text.is_empty() {
            continue;
        }
        write!(f, "\n--- its {name} ---\n")?;
        if text.len() > SHOWN {
            let mut cut = text.len() - SHOWN;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            write!(f, "[... {cut} bytes before ...]\n{}", &text[cut..])?;
        } else {
            f.write_str(text)?;
        }
    }
    Ok(())
}

impl std::error::Error for ProgramError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProgramError::Spawn { source, .. } | ProgramError::Stop { source, .. } => Some(source),
            _ => None,
        }
    }
}
