//! `pause id` and `unpause id` (vmctl(8), pause, unpause).

use proto::control::{Request, Response};

use super::single_operand;
use crate::args::parse_id;
use crate::cli::CommandId;
use crate::daemon::Daemon;
use crate::failure::{CmdResult, Failure};
use crate::output;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Unpause,
}

impl Action {
    fn command(self) -> CommandId {
        match self {
            Action::Pause => CommandId::Pause,
            Action::Unpause => CommandId::Unpause,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Unpause => "unpause",
        }
    }
}

pub fn run(args: &[String], action: Action) -> CmdResult {
    let word = single_operand(args, action.command())?;
    let target = parse_id(Some(word), false)?;
    let daemon = Daemon::connect()?;
    daemon.request(&match action {
        Action::Pause => Request::Pause { target },
        Action::Unpause => Request::Unpause { target },
    })?;
    let (id, result) = match (action, daemon.reply()?) {
        (Action::Pause, Response::Pause { id, result })
        | (Action::Unpause, Response::Unpause { id, result }) => (id, result),
        _ => return Err(Failure::unexpected_response()),
    };
    match result {
        Ok(()) => {
            output::warnx(format_args!("{}d vm {id} successfully", action.verb()));
            Ok(())
        }
        Err(code) => Err(Failure::msg(format!(
            "{} vm command failed: {code}",
            action.verb()
        ))),
    }
}
