//! The statements of vm.conf (vm.conf(5), "DESCRIPTION", "Switches", "VMs", "Instances"), parsed by recursive descent
//! over the lexer's tokens into a [`Config`].
//!
//! Error handling is vmd's (a yacc parser whose only error rule is at the
//! top level): any error, in a value or in the syntax, abandons the whole
//! statement, block included, and the parser skips to the end of the line
//! and reads on as at the top level. Until three more tokens have been
//! accepted, a further syntax error is not reported (it only restarts the
//! skipping); errors about values always are. So a broken block usually
//! gives one message, and the lines left of it are passed over in silence.

use std::mem;

use proto::control::{BootDevice, DiskFormat, DiskSpec, split_format_prefix};
use proto::names::{NameError, validate_vm_name};

use crate::diagnostics::{Location, Report, Warning};
use crate::host::{Host, error_text};
use crate::lexer::{self, Keyword, Lexer, Token, TokenKind};
use crate::macros::{Define, MacroTable};
use crate::model::{
    Agentx, Config, DEFAULT_AGENTX_PATH, InstancePermissions, Interface, LocalInet6,
    MAX_AGENTX_CONTEXT_LEN, MAX_DISKS, MAX_INTERFACES, MAX_PATH_LEN, MAX_SWITCH_NAME_LEN,
    MAX_VCPUS, MAX_VM_NAME_LEN, MacAddr, Owner, StaggeredStart, Switch, Vm,
};
use crate::values;

/// Nesting limit for `include`, so that a file including itself ends with
/// an error instead of exhausting memory.
const MAX_INCLUDE_DEPTH: usize = 32;

/// Longest AgentX socket path (`sun_path` holds 108 bytes with the NUL).
const MAX_AGENTX_PATH_LEN: usize = 107;

/// Why a statement stopped being parsed.
enum Abort {
    /// The next token does not fit: report `syntax error` at it, unless an
    /// error was found just before.
    Syntax,
    /// A value was wrong and this was reported.
    Reported,
}

/// What a parse is for, which decides the checks done on a complete `vm`
/// or `switch` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `vmd -n`: only the file's syntax and values, as vmd does when it
    /// does not register what it reads.
    Check,
    /// Start-up, `reload`, `vmctl load`: each block is also registered,
    /// with the checks that brings (a VM needs something to boot, names
    /// must be unique).
    Register,
}

type Parsed<T> = Result<T, Abort>;

/// How the items of a braced block are separated. A block has at least
/// one item.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Separator {
    /// One item per line (`switch` and `vm` blocks).
    Lines,
    /// Items on one or more lines, optionally separated by commas
    /// (interface options, `allow instance` flags). vmd is stricter (no
    /// commas in interface braces; a comma or newline between instance
    /// flags); files it takes are taken here too.
    List,
}

pub(crate) struct Parser<'h> {
    host: &'h dyn Host,
    macros: MacroTable,
    report: Report,
    /// The file being read; replaced while an include is read.
    lex: Lexer,
    include_depth: usize,
    config: Config,
    next_switch_id: u32,
    mode: Mode,
    /// Tokens still to be accepted after an error before a syntax error is
    /// reported again (yacc's error-recovery window).
    quiet: u8,
}

/// What a finished parse produced: the configuration is only usable when
/// `report.errors` is empty.
pub(crate) struct Outcome {
    pub config: Config,
    pub report: Report,
}

impl<'h> Parser<'h> {
    pub fn new(
        host: &'h dyn Host,
        file: &str,
        text: Vec<u8>,
        defines: &[Define],
        first_switch_id: u32,
        mode: Mode,
    ) -> Parser<'h> {
        Parser {
            host,
            macros: MacroTable::with_defines(defines),
            report: Report::default(),
            lex: Lexer::new(file, text),
            include_depth: 0,
            config: Config::default(),
            next_switch_id: first_switch_id,
            mode,
            quiet: 0,
        }
    }

    pub fn run(mut self) -> Outcome {
        self.statements();
        for name in self.macros.unused() {
            self.report.warnings.push(Warning::MacroNotUsed {
                name: name.to_string(),
            });
        }
        Outcome {
            config: self.config,
            report: self.report,
        }
    }

    // ----- token access -------------------------------------------------

    fn peek(&mut self) -> &Token {
        self.lex.peek(&mut self.macros, &mut self.report)
    }

    fn peek_kind(&mut self) -> TokenKind {
        self.peek().kind.clone()
    }

    fn peek_is(&mut self, kind: &TokenKind) -> bool {
        &self.peek().kind == kind
    }

    fn peek_line(&mut self) -> u32 {
        self.peek().line
    }

    /// Accepts the next token.
    fn next(&mut self) -> Token {
        self.quiet = self.quiet.saturating_sub(1);
        self.lex.next(&mut self.macros, &mut self.report)
    }

    fn error(&mut self, line: u32, message: impl Into<String>) {
        self.report.error(&self.lex.file, line, message);
    }

    /// A wrong value: reported at `line`, and the statement is abandoned.
    fn fail(&mut self, line: u32, message: impl Into<String>) -> Abort {
        self.error(line, message);
        Abort::Reported
    }

    /// A message without a place, as vmd logs the cause of the error
    /// reported right after it.
    fn note(&mut self, message: impl Into<String>) {
        self.report.note(message);
    }

    fn location(&self, line: u32) -> Location {
        Location {
            file: self.lex.file.clone(),
            line,
        }
    }

    /// The next token is not what the grammar allows here (the lexer's
    /// error token and the end of the file included).
    fn unexpected(&mut self) -> Abort {
        Abort::Syntax
    }

    fn expect_keyword(&mut self, keyword: Keyword) -> Parsed<u32> {
        if self.peek_is(&TokenKind::Keyword(keyword)) {
            Ok(self.next().line)
        } else {
            Err(self.unexpected())
        }
    }

    fn expect_punct(&mut self, c: u8) -> Parsed<u32> {
        if self.peek_is(&TokenKind::Punct(c)) {
            Ok(self.next().line)
        } else {
            Err(self.unexpected())
        }
    }

    /// A string, with adjacent strings concatenated (`$dir "/x"`); returns
    /// it with the line it starts on.
    fn string(&mut self) -> Parsed<(String, u32)> {
        let TokenKind::Str(first) = self.peek_kind() else {
            return Err(self.unexpected());
        };
        let line = self.next().line;
        let mut text = first;
        while let TokenKind::Str(more) = self.peek_kind() {
            self.next();
            text.push_str(&more);
        }
        Ok((text, line))
    }

    /// An address argument: like a string, but it may begin with a number,
    /// since `10/8` is lexed as `10` and `/8`.
    fn address(&mut self) -> Parsed<(String, u32)> {
        let line = self.peek_line();
        let mut text = String::new();
        loop {
            match self.peek_kind() {
                TokenKind::Str(part) => text.push_str(&part),
                TokenKind::Number { text: part, .. } => text.push_str(&part),
                _ if text.is_empty() => return Err(self.unexpected()),
                _ => return Ok((text, line)),
            }
            self.next();
        }
    }

    fn number(&mut self) -> Parsed<(i64, u32)> {
        let TokenKind::Number { value, .. } = self.peek_kind() else {
            return Err(self.unexpected());
        };
        Ok((value, self.next().line))
    }

    /// End of a top-level statement: a newline, or the end of the file.
    fn end_line(&mut self) -> Parsed<()> {
        match self.peek_kind() {
            TokenKind::Newline => {
                self.next();
                Ok(())
            }
            TokenKind::Eof => Ok(()),
            _ => Err(self.unexpected()),
        }
    }

    // ----- structure and recovery ---------------------------------------

    fn statements(&mut self) {
        loop {
            match self.peek_kind() {
                TokenKind::Eof => return,
                TokenKind::Newline => {
                    self.next();
                }
                _ => {
                    if let Err(abort) = self.statement() {
                        self.recover(abort);
                    }
                }
            }
        }
    }

    /// Reports a syntax error unless one was found just before, then skips
    /// to the end of the line, braces or not: what follows is read as
    /// top-level statements.
    fn recover(&mut self, abort: Abort) {
        if let Abort::Syntax = abort
            && self.quiet == 0
        {
            let line = self.peek_line();
            self.error(line, "syntax error");
        }
        self.quiet = 3;
        loop {
            match self.peek_kind() {
                TokenKind::Eof => return,
                TokenKind::Newline => {
                    self.next();
                    return;
                }
                _ => {
                    self.lex.next(&mut self.macros, &mut self.report);
                }
            }
        }
    }

    /// `{ item … }`; returns the line of the closing brace. The first error
    /// ends the block (see [`Parser::recover`]).
    fn block(
        &mut self,
        separator: Separator,
        mut item: impl FnMut(&mut Self) -> Parsed<()>,
    ) -> Parsed<u32> {
        self.expect_punct(b'{')?;
        // As in vmd, a block is never empty.
        let mut empty = true;
        loop {
            match self.peek_kind() {
                TokenKind::Newline => {
                    self.next();
                }
                TokenKind::Punct(b'}') if !empty => return Ok(self.next().line),
                _ => {
                    item(self)?;
                    self.end_item(separator)?;
                    empty = false;
                }
            }
        }
    }

    fn end_item(&mut self, separator: Separator) -> Parsed<()> {
        match (self.peek_kind(), separator) {
            (TokenKind::Newline, _) => {
                self.next();
                Ok(())
            }
            (TokenKind::Punct(b'}'), _) => Ok(()),
            (TokenKind::Punct(b','), Separator::List) => {
                self.next();
                Ok(())
            }
            (_, Separator::List) => Ok(()),
            _ => Err(self.unexpected()),
        }
    }

    // ----- top level ----------------------------------------------------

    fn statement(&mut self) -> Parsed<()> {
        match self.peek_kind() {
            TokenKind::Keyword(Keyword::Include) => self.include(),
            TokenKind::Keyword(Keyword::Local) => self.local(),
            TokenKind::Keyword(Keyword::Socket) => self.socket_owner(),
            TokenKind::Keyword(Keyword::Agentx) => self.agentx(),
            TokenKind::Keyword(Keyword::Staggered) => self.staggered_start(),
            TokenKind::Keyword(Keyword::Switch) => self.switch(),
            TokenKind::Keyword(Keyword::Vm) => self.vm(),
            TokenKind::Str(_) => self.macro_definition(),
            _ => Err(self.unexpected()),
        }
    }

    /// `name = value`.
    fn macro_definition(&mut self) -> Parsed<()> {
        let TokenKind::Str(name) = self.peek_kind() else {
            return Err(self.unexpected());
        };
        let line = self.next().line;
        self.expect_punct(b'=')?;
        // A bare number is accepted as a value too (`count = 2`).
        let (value, _) = self.address()?;
        if name.chars().any(|c| c.is_ascii_whitespace() || c == '\x0b') {
            return Err(self.fail(line, "macro name cannot contain whitespace"));
        }
        self.macros.define(&name, &value);
        self.end_line()
    }

    /// `include "path"`: the file's statements are read here, its lines
    /// counted on their own.
    fn include(&mut self) -> Parsed<()> {
        let line = self.next().line;
        let (path, _) = self.string()?;
        if !matches!(self.peek_kind(), TokenKind::Newline | TokenKind::Eof) {
            return Err(self.unexpected());
        }
        let text = match self.host.read_file(&path) {
            Ok(text) if self.include_depth < MAX_INCLUDE_DEPTH => text,
            _ => return Err(self.fail(line, format!("failed to include file {path}"))),
        };
        self.end_line()?;
        let outer = mem::replace(&mut self.lex, Lexer::new(&path, text));
        self.include_depth += 1;
        self.statements();
        self.include_depth -= 1;
        self.lex = outer;
        Ok(())
    }

    /// `local prefix …`, `local inet6`, `local inet6 prefix …`.
    fn local(&mut self) -> Parsed<()> {
        self.next();
        match self.peek_kind() {
            TokenKind::Keyword(Keyword::Prefix) => {
                self.next();
                let (text, line) = self.address()?;
                match values::local_prefix(&text) {
                    Ok(prefix) => self.config.globals.local_prefix = Some(prefix),
                    Err(message) => return Err(self.fail(line, message)),
                }
            }
            TokenKind::Keyword(Keyword::Inet6) => {
                self.next();
                if self.peek_is(&TokenKind::Keyword(Keyword::Prefix)) {
                    self.next();
                    let (text, line) = self.address()?;
                    match values::local_inet6_prefix(&text) {
                        Ok(prefix) => {
                            self.config.globals.local_inet6 = Some(LocalInet6::Prefix(prefix))
                        }
                        Err(message) => return Err(self.fail(line, message)),
                    }
                } else {
                    self.config.globals.local_inet6 = Some(LocalInet6::Random);
                }
            }
            _ => return Err(self.unexpected()),
        }
        self.end_line()
    }

    /// `socket owner <owner>`: the parts given replace the current owner;
    /// a user without a group means group 0.
    fn socket_owner(&mut self) -> Parsed<()> {
        self.next();
        self.expect_keyword(Keyword::Owner)?;
        let owner = self.owner_spec()?;
        let mut socket = self.config.globals.socket_owner.unwrap_or_default();
        if let Some(uid) = owner.uid {
            socket.uid = uid;
            socket.gid = 0;
        }
        if let Some(gid) = owner.gid {
            socket.gid = gid;
        }
        self.config.globals.socket_owner = Some(socket);
        self.end_line()
    }

    /// `agentx [context <ctx>] [path <path>]`, in any order.
    fn agentx(&mut self) -> Parsed<()> {
        self.next();
        let mut agentx = Agentx {
            context: None,
            path: DEFAULT_AGENTX_PATH.to_string(),
        };
        loop {
            match self.peek_kind() {
                TokenKind::Keyword(Keyword::Context) => {
                    self.next();
                    let (context, line) = self.string()?;
                    if context.len() > MAX_AGENTX_CONTEXT_LEN {
                        return Err(self.fail(line, "agentx context too large"));
                    }
                    agentx.context = Some(context);
                }
                TokenKind::Keyword(Keyword::Path) => {
                    self.next();
                    let (path, line) = self.string()?;
                    if path.len() > MAX_AGENTX_PATH_LEN {
                        return Err(self.fail(line, "agentx path too large"));
                    }
                    if !path.starts_with('/') {
                        return Err(self.fail(line, "agentx path is not absolute"));
                    }
                    agentx.path = path;
                }
                _ => break,
            }
        }
        self.end_line()?;
        self.config.globals.agentx = Some(agentx);
        Ok(())
    }

    /// `staggered start parallel <N> delay <S>`.
    fn staggered_start(&mut self) -> Parsed<()> {
        self.next();
        self.expect_keyword(Keyword::Start)?;
        self.expect_keyword(Keyword::Parallel)?;
        let (parallel, parallel_line) = self.number()?;
        self.expect_keyword(Keyword::Delay)?;
        let (delay, delay_line) = self.number()?;
        // [Linux] vmd takes any numbers here; these would make no sense.
        let Ok(parallel) = u32::try_from(parallel)
            .map_err(drop)
            .and_then(|n| if n >= 1 { Ok(n) } else { Err(()) })
        else {
            let message = format!("invalid staggered start parallel: {parallel}");
            return Err(self.fail(parallel_line, message));
        };
        let Ok(delay_secs) = u32::try_from(delay) else {
            let message = format!("invalid staggered start delay: {delay}");
            return Err(self.fail(delay_line, message));
        };
        self.config.globals.staggered_start = Some(StaggeredStart {
            parallel,
            delay_secs,
        });
        self.end_line()
    }

    /// An owner: `<uid>`, `<user>`, `<user>:<group>` or `:<group>`. Names
    /// go through the user and group databases; a numeric name that is not
    /// found there is taken as an id. Neither part (`:`) is root.
    fn owner_spec(&mut self) -> Parsed<Owner> {
        if let TokenKind::Number { value, .. } = self.peek_kind() {
            let line = self.next().line;
            return match u32::try_from(value) {
                Ok(uid) if uid != u32::MAX => Ok(Owner {
                    uid: Some(uid),
                    gid: None,
                }),
                _ => Err(self.fail(line, format!("failed to get user: {value}"))),
            };
        }
        let (text, line) = self.string()?;
        let (user, group) = match text.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (text.as_str(), None),
        };
        let mut owner = Owner::default();
        if !user.is_empty() {
            match self.host.user_id(user).or_else(|| numeric_id(user)) {
                Some(uid) => owner.uid = Some(uid),
                None => return Err(self.fail(line, format!("failed to get user: {user}"))),
            }
        }
        if let Some(group) = group.filter(|g| !g.is_empty()) {
            match self.host.group_id(group).or_else(|| numeric_id(group)) {
                Some(gid) => owner.gid = Some(gid),
                None => return Err(self.fail(line, format!("failed to get group: {group}"))),
            }
        }
        Ok(owner)
    }

    // ----- switches -----------------------------------------------------

    /// `switch <name> { … }`.
    fn switch(&mut self) -> Parsed<()> {
        let switch_line = self.next().line;
        let (name, _) = self.string()?;
        let mut switch = Switch {
            id: 0,
            name,
            interface: String::new(),
            group: None,
            locked: false,
            rdomain: None,
            up: true,
            defined_at: self.location(switch_line),
        };
        let mut enabled = true;
        let close_line = self.block(Separator::Lines, |p| {
            p.switch_option(&mut switch, &mut enabled)
        })?;
        self.register_switch(switch, enabled, close_line)?;
        self.end_line()
    }

    fn switch_option(&mut self, switch: &mut Switch, enabled: &mut bool) -> Parsed<()> {
        match self.peek_kind() {
            TokenKind::Keyword(Keyword::Interface) => {
                self.next();
                let (name, line) = self.string()?;
                match values::switch_interface(&name) {
                    Ok(name) => switch.interface = name,
                    Err(message) => return Err(self.fail(line, message)),
                }
            }
            TokenKind::Keyword(Keyword::Group) => {
                self.next();
                let (name, line) = self.string()?;
                match values::group_name(&name) {
                    Ok(name) => switch.group = Some(name),
                    Err(message) => return Err(self.fail(line, message)),
                }
            }
            TokenKind::Keyword(Keyword::Locked) => {
                self.next();
                self.expect_keyword(Keyword::Lladdr)?;
                switch.locked = true;
            }
            TokenKind::Keyword(Keyword::Rdomain) => {
                self.next();
                let (value, line) = self.number()?;
                match values::rdomain(value) {
                    Ok(rdomain) => switch.rdomain = Some(rdomain),
                    Err(message) => return Err(self.fail(line, message)),
                }
            }
            TokenKind::Keyword(Keyword::Up) => {
                self.next();
                switch.up = true;
            }
            TokenKind::Keyword(Keyword::Down) => {
                self.next();
                switch.up = false;
            }
            TokenKind::Keyword(Keyword::Enable) => {
                self.next();
                *enabled = true;
            }
            TokenKind::Keyword(Keyword::Disable) => {
                self.next();
                *enabled = false;
            }
            _ => return Err(self.unexpected()),
        }
        Ok(())
    }

    /// A complete switch block. Only its interface is checked when the file
    /// is only checked; the rest when it is registered.
    fn register_switch(
        &mut self,
        mut switch: Switch,
        enabled: bool,
        close_line: u32,
    ) -> Parsed<()> {
        if switch.interface.is_empty() {
            let message = format!("switch \"{}\" is missing interface name", switch.name);
            return Err(self.fail(close_line, message));
        }
        if !enabled || self.mode == Mode::Check {
            return Ok(());
        }
        // [Linux] a VM's `switch` can name no longer switch, and switches
        // are found by name.
        if switch.name.len() > MAX_SWITCH_NAME_LEN {
            let message = format!("switch name too long: {}", switch.name);
            return Err(self.fail(close_line, message));
        }
        if self.config.switches.iter().any(|s| s.name == switch.name) {
            let message = format!("switch \"{}\" defined more than once", switch.name);
            return Err(self.fail(close_line, message));
        }
        switch.id = self.next_switch_id;
        self.next_switch_id = self.next_switch_id.saturating_add(1);
        self.config.switches.push(switch);
        Ok(())
    }

    // ----- virtual machines ---------------------------------------------

    /// `vm <name> [instance <name>] { … }`.
    fn vm(&mut self) -> Parsed<()> {
        let vm_line = self.next().line;
        let (name, name_line) = self.string()?;
        let mut instance_of = None;
        let mut vm_name = name;
        if self.peek_is(&TokenKind::Keyword(Keyword::Instance)) {
            self.next();
            let (instance, _) = self.string()?;
            if vm_name.len() > MAX_VM_NAME_LEN {
                return Err(self.fail(name_line, format!("vm {vm_name} name too long")));
            }
            instance_of = Some(mem::replace(&mut vm_name, instance));
        }
        if vm_name.len() > MAX_VM_NAME_LEN {
            return Err(self.fail(name_line, "vm name too long"));
        }
        let mut vm = Vm {
            name: vm_name,
            instance_of,
            enabled: true,
            memory: None,
            vcpus: None,
            boot: None,
            boot_device: None,
            cmdline: None,
            initrd: None,
            user_data: None,
            ssh_key: None,
            cdrom: None,
            disks: Vec::new(),
            interfaces: Vec::new(),
            interface_count: None,
            owner: Owner::default(),
            instances: None,
            sev: false,
            defined_at: self.location(vm_line),
        };
        let close_line = self.block(Separator::Lines, |p| p.vm_option(&mut vm))?;
        self.register_vm(vm, close_line)?;
        self.end_line()
    }

    /// A complete VM block; checked further when it is registered.
    fn register_vm(&mut self, mut vm: Vm, close_line: u32) -> Parsed<()> {
        let wanted = vm.interface_count.unwrap_or(0) as usize;
        while vm.interfaces.len() < wanted {
            vm.interfaces.push(Interface::default());
        }
        if self.mode == Mode::Register {
            self.vm_registration_checks(&vm, close_line)?;
            if self.config.vms.iter().any(|v| v.name == vm.name) {
                self.report.warnings.push(Warning::VmSkipped {
                    name: vm.name,
                    location: vm.defined_at,
                });
                return Ok(());
            }
        }
        self.config.vms.push(vm);
        Ok(())
    }

    /// What registering a VM checks, in vmd's order: vmd logs the cause,
    /// then reports the block as failed with an errno's text.
    fn vm_registration_checks(&mut self, vm: &Vm, close_line: u32) -> Parsed<()> {
        // vmd's own errno for a missing disk has no text: strerror says
        // it is unknown.
        const DISK_MISSING: &str = "Unknown error: 1002";
        const EINVAL: &str = "Invalid argument";
        let failure = if vm.instance_of.is_some() {
            // An instance gets its devices from its template: checked by
            // the daemon once the template is known.
            None
        } else if !vm.has_device_options() {
            Some(("invalid configuration, no devices", DISK_MISSING))
        } else if !vm.has_boot_source() {
            Some(("no kernel or disk/cdrom specified", EINVAL))
        } else {
            None
        };
        let failure = failure.or_else(|| {
            (validate_vm_name(&vm.name) == Err(NameError::Invalid))
                .then_some(("invalid VM name", EINVAL))
        });
        if let Some((cause, errno)) = failure {
            self.note(cause);
            let message = format!("vm \"{}\" failed: {errno}", vm.name);
            return Err(self.fail(close_line, message));
        }
        Ok(())
    }

    fn vm_option(&mut self, vm: &mut Vm) -> Parsed<()> {
        let token = self.peek().clone();
        match token.kind {
            TokenKind::Keyword(Keyword::Enable) => {
                self.next();
                vm.enabled = true;
            }
            TokenKind::Keyword(Keyword::Disable) => {
                self.next();
                vm.enabled = false;
            }
            TokenKind::Keyword(Keyword::Boot) => {
                self.next();
                if self.peek_is(&TokenKind::Keyword(Keyword::Device)) {
                    self.next();
                    self.boot_device(vm)?;
                } else {
                    let (path, line) = self.string()?;
                    if vm.boot.is_some() {
                        return Err(self.fail(token.line, "kernel specified more than once"));
                    }
                    match self.host.canonicalize(&path) {
                        Ok(path) => vm.boot = Some(path),
                        Err(err) => {
                            let message = format!("kernel path not found: {}", error_text(&err));
                            return Err(self.fail(line, message));
                        }
                    }
                }
            }
            TokenKind::Keyword(Keyword::Cdrom) => {
                self.next();
                let (path, line) = self.string()?;
                if vm.cdrom.is_some() {
                    return Err(self.fail(token.line, "cdrom specified more than once"));
                }
                if path.len() > MAX_PATH_LEN {
                    return Err(self.fail(line, "cdrom name too long"));
                }
                vm.cdrom = Some(path);
            }
            TokenKind::Keyword(Keyword::Disk) => {
                self.next();
                self.disk(vm, token.line)?;
            }
            TokenKind::Keyword(Keyword::Local) => {
                self.next();
                self.expect_keyword(Keyword::Interface)?;
                self.interface(vm, true)?;
            }
            TokenKind::Keyword(Keyword::Interface) => {
                self.next();
                self.interface(vm, false)?;
            }
            TokenKind::Keyword(Keyword::Interfaces) => {
                self.next();
                let (count, line) = self.number()?;
                if vm.interface_count.is_some_and(|n| n != 0) {
                    return Err(self.fail(token.line, "interfaces specified more than once"));
                }
                if !(0..=MAX_INTERFACES as i64).contains(&count) {
                    return Err(self.fail(line, format!("too many interfaces: {count}")));
                }
                vm.interface_count = Some(count as u32);
            }
            TokenKind::Keyword(Keyword::Memory) => {
                self.next();
                self.memory(vm, token.line)?;
            }
            TokenKind::Keyword(Keyword::Owner) => {
                self.next();
                vm.owner = self.owner_spec()?;
            }
            TokenKind::Keyword(Keyword::Allow) => {
                self.next();
                self.expect_keyword(Keyword::Instance)?;
                let mut permissions = vm.instances.unwrap_or_default();
                if self.peek_is(&TokenKind::Punct(b'{')) {
                    self.block(Separator::List, |p| p.instance_flag(&mut permissions))?;
                } else {
                    self.instance_flag(&mut permissions)?;
                }
                vm.instances = Some(permissions);
            }
            TokenKind::Keyword(Keyword::Sev) => {
                self.next();
                vm.sev = true;
            }
            // Linux extensions: words, not reserved keywords, so that no
            // file that is valid for the reference stops parsing.
            TokenKind::Str(word) if word == lexer::CPUS => {
                self.next();
                let (count, line) = self.number()?;
                if vm.vcpus.is_some() {
                    return Err(self.fail(token.line, "cpus specified more than once"));
                }
                if !(1..=i64::from(MAX_VCPUS)).contains(&count) {
                    return Err(self.fail(line, format!("invalid number of cpus: {count}")));
                }
                vm.vcpus = Some(count as u32);
            }
            TokenKind::Str(word) if word == lexer::CMDLINE => {
                self.next();
                let (cmdline, _) = self.string()?;
                if vm.cmdline.is_some() {
                    return Err(self.fail(token.line, "cmdline specified more than once"));
                }
                vm.cmdline = Some(cmdline);
            }
            TokenKind::Str(word) if word == lexer::INITRD => {
                self.next();
                let (path, line) = self.string()?;
                if vm.initrd.is_some() {
                    return Err(self.fail(token.line, "initrd specified more than once"));
                }
                match self.host.canonicalize(&path) {
                    Ok(path) => vm.initrd = Some(path),
                    Err(err) => {
                        let message = format!("initrd path not found: {}", error_text(&err));
                        return Err(self.fail(line, message));
                    }
                }
            }
            TokenKind::Str(word) if word == lexer::USER_DATA || word == lexer::SSH_KEY => {
                self.next();
                let (path, line) = self.string()?;
                let slot = if word == lexer::USER_DATA {
                    &mut vm.user_data
                } else {
                    &mut vm.ssh_key
                };
                if slot.is_some() {
                    return Err(self.fail(token.line, format!("{word} specified more than once")));
                }
                // Resolved now, for an early error; the file is read
                // when the VM starts (vmd checks its contents then).
                match self.host.canonicalize(&path) {
                    Ok(path) => *slot = Some(path),
                    Err(err) => {
                        let message = format!("{word} path not found: {}", error_text(&err));
                        return Err(self.fail(line, message));
                    }
                }
            }
            _ => return Err(self.unexpected()),
        }
        Ok(())
    }

    /// After `boot device`: `disk`, `cdrom` or `net`.
    fn boot_device(&mut self, vm: &mut Vm) -> Parsed<()> {
        let device = match self.peek_kind() {
            TokenKind::Keyword(Keyword::Disk) => BootDevice::Disk,
            TokenKind::Keyword(Keyword::Cdrom) => BootDevice::Cdrom,
            TokenKind::Keyword(Keyword::Net) => BootDevice::Net,
            _ => return Err(self.unexpected()),
        };
        self.next();
        // As in vmd, a later `boot device` replaces an earlier one.
        vm.boot_device = Some(device);
        Ok(())
    }

    /// After `memory`: a number of bytes or a scaled size.
    fn memory(&mut self, vm: &mut Vm, line: u32) -> Parsed<()> {
        let (result, word, repeated) = match self.peek_kind() {
            TokenKind::Number { value, .. } => {
                self.next();
                (
                    values::memory_from_bytes(value),
                    value.to_string(),
                    "memory specified more than once",
                )
            }
            TokenKind::Str(_) => {
                let (size, _) = self.string()?;
                (
                    values::memory_from_size(&size),
                    size,
                    "argument specified more than once",
                )
            }
            _ => return Err(self.unexpected()),
        };
        if vm.memory.is_some() {
            return Err(self.fail(line, repeated));
        }
        match result {
            Ok(bytes) => vm.memory = Some(bytes),
            Err(cause) => {
                self.note(cause);
                return Err(self.fail(line, format!("failed to parse size: {word}")));
            }
        }
        Ok(())
    }

    /// After `disk`: `<path> [format raw|qcow2]`. The path may carry a
    /// `raw:`/`qcow2:` prefix as on vmctl's command line; `format` wins over
    /// it; without either, the image's first bytes decide.
    fn disk(&mut self, vm: &mut Vm, line: u32) -> Parsed<()> {
        let (argument, path_line) = self.string()?;
        let format_word = if self.peek_is(&TokenKind::Keyword(Keyword::Format)) {
            self.next();
            Some(self.string()?)
        } else {
            None
        };
        let (path, prefixed) = split_format_prefix(&argument);
        let format = match format_word {
            Some((word, word_line)) => match word.to_ascii_lowercase().as_str() {
                "raw" => Some(DiskFormat::Raw),
                "qcow2" => Some(DiskFormat::Qcow2),
                _ => {
                    let message = format!("unrecognized disk format {word}");
                    return Err(self.fail(word_line, message));
                }
            },
            None => prefixed,
        };
        if vm.disks.len() >= MAX_DISKS {
            self.note("too many disks");
            return Err(self.fail(line, format!("failed to parse disks: {path}")));
        }
        match self.host.canonicalize(path) {
            Ok(resolved) => {
                let format = format.unwrap_or_else(|| {
                    if self.host.has_qcow2_magic(&resolved) {
                        DiskFormat::Qcow2
                    } else {
                        DiskFormat::Raw
                    }
                });
                vm.disks.push(DiskSpec {
                    path: resolved,
                    format,
                });
            }
            Err(err) => {
                self.note(format!("disk {path}: {}", error_text(&err)));
                return Err(self.fail(path_line, format!("failed to parse disks: {path}")));
            }
        }
        Ok(())
    }

    /// After `[local] interface`: `[<tap>] [{ options } | options]`.
    /// The tap name and the number of interfaces are checked once the
    /// options have been read, as vmd does.
    fn interface(&mut self, vm: &mut Vm, local: bool) -> Parsed<()> {
        let mut interface = Interface {
            local,
            ..Interface::default()
        };
        let name = match self.peek_kind() {
            TokenKind::Str(name) => {
                self.next();
                Some(name)
            }
            _ => None,
        };
        if self.peek_is(&TokenKind::Punct(b'{')) {
            self.block(Separator::List, |p| p.interface_option(&mut interface))?;
        } else {
            while self.at_interface_option() {
                self.interface_option(&mut interface)?;
                if self.peek_is(&TokenKind::Punct(b',')) {
                    self.next();
                }
            }
        }
        let line = self.peek_line();
        if vm.interfaces.len() >= MAX_INTERFACES {
            let message = format!("too many interfaces: {}", vm.interfaces.len() + 1);
            return Err(self.fail(line, message));
        }
        if let Some(name) = name {
            match values::tap_name(&name) {
                Ok(tap) => interface.tap = tap,
                Err(message) => return Err(self.fail(line, message)),
            }
        }
        vm.interfaces.push(interface);
        Ok(())
    }

    fn at_interface_option(&mut self) -> bool {
        matches!(
            self.peek_kind(),
            TokenKind::Keyword(
                Keyword::Switch
                    | Keyword::Group
                    | Keyword::Locked
                    | Keyword::Lladdr
                    | Keyword::Rdomain
                    | Keyword::Up
                    | Keyword::Down
            )
        )
    }

    fn interface_option(&mut self, interface: &mut Interface) -> Parsed<()> {
        match self.peek_kind() {
            TokenKind::Keyword(Keyword::Switch) => {
                self.next();
                let (name, line) = self.string()?;
                if name.len() > MAX_SWITCH_NAME_LEN {
                    return Err(self.fail(line, format!("switch name too long: {name}")));
                }
                interface.switch = Some(name);
            }
            TokenKind::Keyword(Keyword::Group) => {
                self.next();
                let (name, line) = self.string()?;
                match values::group_name(&name) {
                    Ok(name) => interface.group = Some(name),
                    Err(message) => return Err(self.fail(line, message)),
                }
            }
            TokenKind::Keyword(Keyword::Locked) => {
                self.next();
                self.expect_keyword(Keyword::Lladdr)?;
                interface.locked = true;
                self.optional_lladdr(interface)?;
            }
            TokenKind::Keyword(Keyword::Lladdr) => {
                self.next();
                self.optional_lladdr(interface)?;
            }
            TokenKind::Keyword(Keyword::Rdomain) => {
                self.next();
                let (value, line) = self.number()?;
                match values::rdomain(value) {
                    Ok(rdomain) => interface.rdomain = Some(rdomain),
                    Err(message) => return Err(self.fail(line, message)),
                }
            }
            TokenKind::Keyword(Keyword::Up) => {
                self.next();
                interface.up = true;
            }
            TokenKind::Keyword(Keyword::Down) => {
                self.next();
                interface.up = false;
            }
            _ => return Err(self.unexpected()),
        }
        Ok(())
    }

    /// The MAC after `lladdr`, if one follows.
    fn optional_lladdr(&mut self, interface: &mut Interface) -> Parsed<()> {
        if let TokenKind::Str(_) = self.peek_kind() {
            let (text, line) = self.string()?;
            match MacAddr::parse(&text) {
                Some(mac) => interface.lladdr = Some(mac),
                // vmd's message ends in a newline of its own, which prints
                // as an empty line after it.
                None => return Err(self.fail(line, format!("invalid address: {text}\n"))),
            }
        }
        Ok(())
    }

    /// One flag of `allow instance`.
    fn instance_flag(&mut self, permissions: &mut InstancePermissions) -> Parsed<()> {
        let flag = match self.peek_kind() {
            TokenKind::Keyword(Keyword::Boot) => &mut permissions.boot,
            TokenKind::Keyword(Keyword::Cdrom) => &mut permissions.cdrom,
            TokenKind::Keyword(Keyword::Disk) => &mut permissions.disk,
            TokenKind::Keyword(Keyword::Instance) => &mut permissions.instance,
            TokenKind::Keyword(Keyword::Interface) => &mut permissions.interface,
            TokenKind::Keyword(Keyword::Memory) => &mut permissions.memory,
            TokenKind::Str(word) if word == lexer::CPUS => &mut permissions.cpus,
            TokenKind::Keyword(Keyword::Owner) => {
                self.next();
                permissions.owner = self.owner_spec()?;
                return Ok(());
            }
            _ => return Err(self.unexpected()),
        };
        *flag = true;
        self.next();
        Ok(())
    }
}

/// A decimal user or group id written as a name (`owner 1000:100`).
fn numeric_id(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|&id| id != u32::MAX)
}
