//! The root-only daemon controls: `load`, `reload`, `reset` and `log`
//! (vmctl(8), load, log, reload, reset). Each sends one request and expects
//! CTL_OK; success prints nothing.

use proto::control::{Request, ResetMode, Response};

use super::single_operand;
use crate::cli::CommandId;
use crate::daemon::Daemon;
use crate::failure::{CmdResult, Failure};

/// Sends a control request and waits for its CTL_OK.
fn control(request: Request) -> CmdResult {
    let daemon = Daemon::connect()?;
    daemon.request(&request)?;
    match daemon.reply()? {
        Response::Ctl(Ok(())) => Ok(()),
        _ => Err(Failure::unexpected_response()),
    }
}

/// `load filename`. vmd reads the file from its own working directory,
/// so a relative name is made absolute against the caller's.
pub fn run_load(args: &[String]) -> CmdResult {
    let file = single_operand(args, CommandId::Load)?;
    let path = std::path::absolute(file)
        .map_err(|err| Failure::msg(format!("{file}: {}", crate::daemon::error_text(&err))))?;
    control(Request::Load {
        path: path.to_string_lossy().into_owned(),
    })
}

/// `reload`: no operands.
pub fn run_reload(args: &[String]) -> CmdResult {
    if !args.is_empty() {
        return Err(Failure::Usage(CommandId::Reload));
    }
    control(Request::Reload)
}

/// The `reset` mode named by a word (case-insensitive, exact).
pub fn parse_reset_mode(word: &str) -> Option<ResetMode> {
    [
        ("all", ResetMode::All),
        ("switches", ResetMode::Switches),
        ("vms", ResetMode::Vms),
    ]
    .into_iter()
    .find(|(name, _)| name.eq_ignore_ascii_case(word))
    .map(|(_, mode)| mode)
}

/// `reset [all | switches | vms]`, `all` by default.
pub fn run_reset(args: &[String]) -> CmdResult {
    let mode = match args {
        [] => ResetMode::All,
        [word] => parse_reset_mode(word).ok_or(Failure::Usage(CommandId::Reset))?,
        _ => return Err(Failure::Usage(CommandId::Reset)),
    };
    control(Request::Reset { mode })
}

/// The daemon log level a `log` operand names: a case-insensitive prefix of
/// `brief` (0) or `verbose` (2).
pub fn parse_log_level(word: &str) -> Option<u8> {
    let is_prefix_of =
        |full: &str| full.len() >= word.len() && full[..word.len()].eq_ignore_ascii_case(word);
    if is_prefix_of("brief") {
        Some(0)
    } else if is_prefix_of("verbose") {
        Some(2)
    } else {
        None
    }
}

/// `log brief | verbose`.
pub fn run_log(args: &[String]) -> CmdResult {
    let word = single_operand(args, CommandId::Log)?;
    let level = parse_log_level(word).ok_or(Failure::Usage(CommandId::Log))?;
    control(Request::Log { level })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels() {
        for word in ["brief", "b", "BR", "Brief", ""] {
            assert_eq!(parse_log_level(word), Some(0), "{word:?}");
        }
        for word in ["verbose", "v", "VERB", "verBose"] {
            assert_eq!(parse_log_level(word), Some(2), "{word:?}");
        }
        for word in ["briefly", "x", "verbosee", "debug", "é"] {
            assert_eq!(parse_log_level(word), None, "{word:?}");
        }
    }

    #[test]
    fn reset_modes() {
        assert_eq!(parse_reset_mode("all"), Some(ResetMode::All));
        assert_eq!(parse_reset_mode("VMS"), Some(ResetMode::Vms));
        assert_eq!(parse_reset_mode("Switches"), Some(ResetMode::Switches));
        assert_eq!(parse_reset_mode("switch"), None);
        assert_eq!(parse_reset_mode(""), None);
    }

    #[test]
    fn usage_errors() {
        let words = |s: &[&str]| s.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        assert_eq!(
            run_reload(&words(&["x"])),
            Err(Failure::Usage(CommandId::Reload))
        );
        assert_eq!(
            run_reset(&words(&["bogus"])),
            Err(Failure::Usage(CommandId::Reset))
        );
        assert_eq!(
            run_reset(&words(&["all", "vms"])),
            Err(Failure::Usage(CommandId::Reset))
        );
        assert_eq!(run_log(&words(&[])), Err(Failure::Usage(CommandId::Log)));
        assert_eq!(
            run_log(&words(&["loud"])),
            Err(Failure::Usage(CommandId::Log))
        );
        assert_eq!(run_load(&words(&[])), Err(Failure::Usage(CommandId::Load)));
    }
}
