//! Path handling: `~` expansion, absolutizing, and finding the config file.
//!
//! Database paths are the lookup key the CLI uses (`walship restore /data/app.db`), so they are
//! normalised exactly like v0.3.13's `expand` + `filepath.Abs` (lexical clean, no symlink
//! resolution); otherwise the same database would be "not found" depending on how it was spelled.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Replaces a leading `~` or `~/` with `$HOME`. `~user` is left alone, as in v0.3.13.
///
/// Returns `None` when a `~` needs expanding but there is no home directory.
pub(crate) fn expand_home(path: &Path) -> Option<PathBuf> {
    let mut comps = path.components();
    match comps.next() {
        Some(Component::Normal(first)) if first == "~" => {
            let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
            Some(PathBuf::from(home).join(comps.as_path()))
        }
        _ => Some(path.to_path_buf()),
    }
}

/// `~` expansion, then absolute relative to the working directory, then a lexical clean.
pub(crate) fn absolutize(path: &Path) -> Result<PathBuf, String> {
    let expanded = expand_home(path).ok_or("cannot expand ~: $HOME is not set")?;
    let joined = if expanded.is_absolute() {
        expanded
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot read the current directory: {e}"))?
            .join(expanded)
    };
    Ok(clean(&joined))
}

/// Go's `filepath.Clean`: drops `.`, resolves `..` lexically, never climbs above `/`.
pub(crate) fn clean(path: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().map(|c| c.as_os_str()).collect()
}

/// Which config file to read: the `-config` flag, else `$WALSHIP_CONFIG`, else
/// `$LITESTREAM_CONFIG` (so existing deployments keep working), else `/etc/walship.yml` if it
/// exists, else `/etc/litestream.yml`. A leading `~` is expanded; empty variables count as unset.
pub fn resolve_config_path(flag: Option<&Path>) -> PathBuf {
    resolve_with(flag, |name| std::env::var_os(name), |p| p.exists())
}

pub(crate) fn resolve_with(
    flag: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
    exists: impl Fn(&Path) -> bool,
) -> PathBuf {
    let chosen = flag
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .or_else(|| {
            ["WALSHIP_CONFIG", "LITESTREAM_CONFIG"]
                .into_iter()
                .filter_map(&env)
                .find(|v| !v.is_empty())
                .map(PathBuf::from)
        });
    match chosen {
        Some(p) => expand_home(&p).unwrap_or(p),
        None if exists(Path::new("/etc/walship.yml")) => PathBuf::from("/etc/walship.yml"),
        None => PathBuf::from("/etc/litestream.yml"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_like_go() {
        for (input, want) in [
            ("/a/b/../c", "/a/c"),
            ("/a/./b/", "/a/b"),
            ("//a//b", "/a/b"),
            ("/..", "/"),
            ("/../a", "/a"),
            ("a/../..", ".."),
            ("a/..", "."),
            ("", "."),
            ("../../x", "../../x"),
            ("/", "/"),
        ] {
            assert_eq!(clean(Path::new(input)), PathBuf::from(want), "{input}");
        }
    }

    #[test]
    fn absolutize_relative_and_absolute() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            absolutize(Path::new("x/../db.sqlite")).unwrap(),
            cwd.join("db.sqlite")
        );
        assert_eq!(
            absolutize(Path::new("/data/./a.db")).unwrap(),
            PathBuf::from("/data/a.db")
        );
    }

    #[test]
    fn tilde() {
        let home = PathBuf::from(std::env::var_os("HOME").expect("HOME set in tests"));
        assert_eq!(expand_home(Path::new("~")).unwrap(), home);
        assert_eq!(expand_home(Path::new("~/a/b")).unwrap(), home.join("a/b"));
        assert_eq!(
            expand_home(Path::new("~bob/a")).unwrap(),
            PathBuf::from("~bob/a")
        );
        assert_eq!(
            expand_home(Path::new("/x/~")).unwrap(),
            PathBuf::from("/x/~")
        );
    }

    #[test]
    fn config_path_precedence() {
        let env = |w: Option<&'static str>, l: Option<&'static str>| {
            move |name: &str| match name {
                "WALSHIP_CONFIG" => w.map(OsString::from),
                "LITESTREAM_CONFIG" => l.map(OsString::from),
                _ => None,
            }
        };
        let yes = |_: &Path| true;
        let no = |_: &Path| false;
        let flag = Path::new("/f.yml");
        assert_eq!(
            resolve_with(Some(flag), env(Some("/w"), Some("/l")), yes),
            flag
        );
        assert_eq!(
            resolve_with(None, env(Some("/w"), Some("/l")), yes),
            Path::new("/w")
        );
        assert_eq!(
            resolve_with(None, env(Some(""), Some("/l")), yes),
            Path::new("/l")
        );
        assert_eq!(
            resolve_with(None, env(None, Some("/l")), yes),
            Path::new("/l")
        );
        assert_eq!(
            resolve_with(None, env(None, None), yes),
            Path::new("/etc/walship.yml")
        );
        assert_eq!(
            resolve_with(None, env(None, None), no),
            Path::new("/etc/litestream.yml")
        );
        assert_eq!(
            resolve_with(Some(Path::new("")), env(None, None), no),
            Path::new("/etc/litestream.yml")
        );
    }
}
