//! The command line the demo's servers (`atm`, `bank`) share: flags
//! written `--flag value` or `--flag=value` ([`Flags`]), the exit
//! statuses (0; 1 when serving fails; 2 on bad arguments:
//! [`exit_status`]), and the stop signals that end a server with status 0
//! ([`stop_signal`]).

use std::process::ExitCode;

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::event_loop::Handle;
use crate::task::SettableFuture;

/// The flags of a command line, each written `--flag value` or
/// `--flag=value`. A word that is not a flag comes back as it is, for the
/// caller to reject.
///
/// ```
/// use protoloop::demo::cli::Flags;
/// let args: Vec<String> = ["--listen=127.0.0.1:0", "--balance", "Jane Doe=5", "stray"]
///     .map(String::from)
///     .into();
/// let mut flags = Flags::new(&args);
/// assert_eq!(flags.next_flag(), Some("--listen"));
/// assert_eq!(flags.value().unwrap(), "127.0.0.1:0");
/// assert_eq!(flags.next_flag(), Some("--balance"));
/// assert_eq!(flags.value().unwrap(), "Jane Doe=5");
/// assert_eq!(flags.next_flag(), Some("stray"));
/// assert_eq!(flags.value().unwrap_err(), "stray needs a value");
/// assert_eq!(flags.next_flag(), None);
/// ```
#[derive(Debug)]
pub struct Flags<'a> {
    args: std::slice::Iter<'a, String>,
    /// The flag `next_flag` returned, and its value if written after `=`.
    current: Option<(&'a str, Option<&'a str>)>,
}

impl<'a> Flags<'a> {
    /// The flags in `args` (the program's name left out).
    pub fn new(args: &'a [String]) -> Flags<'a> {
        Flags {
            args: args.iter(),
            current: None,
        }
    }

    /// The next flag (the part before any `=`), or the next word that is
    /// not a flag; `None` at the end.
    pub fn next_flag(&mut self) -> Option<&'a str> {
        let arg = self.args.next()?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v)),
            _ => (arg.as_str(), None),
        };
        self.current = Some((flag, inline));
        Some(flag)
    }

    /// The value of the flag [`next_flag`](Flags::next_flag) returned: what
    /// follows its `=`, or else the next argument (`"FLAG needs a value"`
    /// when there is none).
    pub fn value(&mut self) -> Result<String, String> {
        let (flag, inline) = self.current.unwrap_or(("a flag", None));
        inline
            .map(str::to_string)
            .or_else(|| self.args.next().cloned())
            .ok_or_else(|| format!("{flag} needs a value"))
    }
}

/// A program's exit status from its parsed command line and the server
/// run on it: a parse error is printed as `PROGRAM: ERROR` and the usage,
/// exit 2; then `serve` runs, and its error is printed as
/// `PROGRAM: ERROR`, exit 1; else exit 0.
///
/// ```
/// use std::process::ExitCode;
/// use protoloop::demo::cli::exit_status;
/// let usage = "usage: demo [--port N]";
/// assert_eq!(exit_status("demo", usage, Ok(8), |_port| Ok(())), ExitCode::SUCCESS);
/// assert_eq!(exit_status("demo", usage, Ok(8), |_port| Err("no".into())), ExitCode::FAILURE);
/// assert_eq!(exit_status::<u16>("demo", usage, Err("bad port".into()), |_| Ok(())), ExitCode::from(2));
/// ```
pub fn exit_status<C>(
    program: &str,
    usage: &str,
    parsed: Result<C, String>,
    serve: impl FnOnce(C) -> Result<(), String>,
) -> ExitCode {
    let cli = match parsed {
        Ok(cli) => cli,
        Err(msg) => {
            eprintln!("{program}: {msg}\n{usage}");
            return ExitCode::from(2);
        }
    };
    match serve(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("{program}: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// A future set to the name of the first stop signal the process gets,
/// `"SIGTERM"` or `"SIGINT"`, watched from now on (on `h`'s loop): the
/// demo's servers shut down gracefully and exit 0 on either.
///
/// ```
/// use protoloop::EventLoop;
/// use protoloop::demo::cli::stop_signal;
/// let lp = EventLoop::new().unwrap();
/// let stop = stop_signal(&lp.handle()).unwrap();
/// signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
/// let got = lp.run_until_complete(stop).unwrap().unwrap();
/// assert_eq!(got, "SIGTERM");
/// ```
pub fn stop_signal(h: &Handle) -> Result<SettableFuture<&'static str>, String> {
    let stop = h.create_future::<&'static str>();
    for (sig, name) in [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT")] {
        let stop = stop.clone();
        h.add_signal_handler(sig, move || {
            let _ = stop.set_result(name);
        })
        .map_err(|e| format!("could not watch {name}: {e}"))?;
    }
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::Flags;

    #[test]
    fn a_value_asked_before_any_flag_is_a_clear_error() {
        let args = vec!["--listen".to_string()];
        let mut flags = Flags::new(&args);
        // Nothing read yet: the value is not taken from the flag itself.
        assert_eq!(flags.value().unwrap(), "--listen");
        assert_eq!(flags.value().unwrap_err(), "a flag needs a value");
    }

    #[test]
    fn an_inline_value_may_hold_equals_signs_and_be_empty() {
        let args: Vec<String> = ["--balance=Jane=5", "--listen="].map(String::from).into();
        let mut flags = Flags::new(&args);
        assert_eq!(flags.next_flag(), Some("--balance"));
        assert_eq!(flags.value().unwrap(), "Jane=5");
        assert_eq!(flags.next_flag(), Some("--listen"));
        assert_eq!(flags.value().unwrap(), "");
        assert_eq!(flags.next_flag(), None);
    }
}
