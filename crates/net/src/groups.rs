//! Interface groups (docs/networking.md, "What vmd makes"). OpenBSD interfaces belong to
//! any number of named groups; a Linux link has one numeric group, which
//! iproute2 names in its `group` table. A vm.conf group name maps to that
//! number if the table names it or if it is a number itself.

use std::path::Path;

/// Where iproute2 keeps the group table: the administrator's copy first,
/// then the distribution's defaults of newer iproute2 releases.
pub const GROUP_TABLES: [&str; 2] = ["/etc/iproute2/group", "/usr/share/iproute2/group"];

/// The number of group `name`, from the first table that names it.
pub fn resolve(name: &str) -> Option<u32> {
    resolve_in(name, GROUP_TABLES.iter().map(Path::new))
}

/// [`resolve`] with the tables given.
pub fn resolve_in<'a>(name: &str, tables: impl IntoIterator<Item = &'a Path>) -> Option<u32> {
    if let Ok(number) = name.parse::<u32>() {
        return Some(number);
    }
    tables
        .into_iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .find_map(|table| lookup(&table, name))
}

/// `number name` lines; `#` starts a comment. Numbers may be decimal or
/// hexadecimal (`0x…`), as iproute2 reads them.
fn lookup(table: &str, name: &str) -> Option<u32> {
    table.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let number = fields.next()?;
        (fields.next()? == name).then_some(())?;
        match number.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => number.parse().ok(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_table_names() {
        let dir = std::env::temp_dir().join(format!("net-groups-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let table = dir.join("group");
        std::fs::write(
            &table,
            "# device group names\n0\tdefault\n10 vms # the guests\n0x20\tlab\n",
        )
        .unwrap();
        let tables = || [table.as_path()];
        assert_eq!(resolve_in("vms", tables()), Some(10));
        assert_eq!(resolve_in("lab", tables()), Some(32));
        assert_eq!(resolve_in("default", tables()), Some(0));
        assert_eq!(resolve_in("42", tables()), Some(42));
        assert_eq!(resolve_in("guests", tables()), None);
        assert_eq!(resolve_in("vms", [dir.join("missing").as_path()]), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
