//! Macros: `name = value` in the file and `-D name=value` on vmd's command
//! line (vm.conf(5), "Macros").

use std::fmt;

/// A `-D name=value` definition from the command line. It takes precedence
/// over any definition of the same name in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Define {
    pub name: String,
    pub value: String,
}

/// Why a `-D` argument is not a macro definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefineError {
    pub argument: String,
}

impl fmt::Display for DefineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not parse macro definition {}", self.argument)
    }
}

impl std::error::Error for DefineError {}

impl Define {
    /// Parses `name=value`, splitting at the first `=`. The name must be
    /// non-empty; the value may be empty.
    pub fn parse(argument: &str) -> Result<Define, DefineError> {
        match argument.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok(Define {
                name: name.to_string(),
                value: value.to_string(),
            }),
            _ => Err(DefineError {
                argument: argument.to_string(),
            }),
        }
    }
}

#[derive(Debug)]
struct Macro {
    name: String,
    value: String,
    used: bool,
    /// Defined with `-D`: file definitions of this name are ignored and an
    /// unused command-line macro is not worth a warning.
    from_command_line: bool,
}

/// The macros known at a point of the parse, in definition order (which is
/// the order unused-macro warnings are given in).
#[derive(Debug, Default)]
pub(crate) struct MacroTable {
    macros: Vec<Macro>,
}

impl MacroTable {
    pub fn with_defines(defines: &[Define]) -> MacroTable {
        let mut table = MacroTable::default();
        for define in defines {
            table.remove(&define.name);
            table.macros.push(Macro {
                name: define.name.clone(),
                value: define.value.clone(),
                used: false,
                from_command_line: true,
            });
        }
        table
    }

    fn remove(&mut self, name: &str) {
        self.macros.retain(|m| m.name != name);
    }

    /// A definition from the file. A later definition replaces an earlier
    /// one (and starts out unused again); a `-D` macro of the same name wins
    /// silently.
    pub fn define(&mut self, name: &str, value: &str) {
        if self
            .macros
            .iter()
            .any(|m| m.name == name && m.from_command_line)
        {
            return;
        }
        self.remove(name);
        self.macros.push(Macro {
            name: name.to_string(),
            value: value.to_string(),
            used: false,
            from_command_line: false,
        });
    }

    /// The value of `$name`, marking the macro as used.
    pub fn expand(&mut self, name: &str) -> Option<&str> {
        let found = self.macros.iter_mut().find(|m| m.name == name)?;
        found.used = true;
        Some(&found.value)
    }

    /// Names of the file's macros that were never expanded.
    pub fn unused(&self) -> impl Iterator<Item = &str> {
        self.macros
            .iter()
            .filter(|m| !m.used && !m.from_command_line)
            .map(|m| m.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_definitions() {
        assert_eq!(
            Define::parse("a=b=c"),
            Ok(Define {
                name: "a".into(),
                value: "b=c".into()
            })
        );
        assert_eq!(
            Define::parse("a="),
            Ok(Define {
                name: "a".into(),
                value: String::new()
            })
        );
        assert!(Define::parse("=x").is_err());
        let err = Define::parse("novalue").unwrap_err();
        assert_eq!(err.to_string(), "could not parse macro definition novalue");
    }

    #[test]
    fn precedence_and_use() {
        let mut table = MacroTable::with_defines(&[Define::parse("mem=2G").unwrap()]);
        table.define("mem", "1G");
        table.define("img", "/a");
        table.define("img", "/b");
        table.define("spare", "x");
        assert_eq!(table.expand("mem"), Some("2G"));
        assert_eq!(table.expand("img"), Some("/b"));
        assert_eq!(table.expand("nope"), None);
        assert_eq!(table.unused().collect::<Vec<_>>(), ["spare"]);
    }

    #[test]
    fn redefinition_resets_use() {
        let mut table = MacroTable::default();
        table.define("x", "1");
        assert_eq!(table.expand("x"), Some("1"));
        table.define("x", "2");
        assert_eq!(table.unused().collect::<Vec<_>>(), ["x"]);
    }

    #[test]
    fn unused_command_line_macros_are_not_reported() {
        let table = MacroTable::with_defines(&[Define::parse("a=1").unwrap()]);
        assert_eq!(table.unused().count(), 0);
    }
}
