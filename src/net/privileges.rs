//! Dropping root after binding: setgroups([]) → setgid → setuid, then umask, then a check that
//! root cannot be regained.
//!
//! The order matters (as the privilege-dropping tutorial explains): supplementary groups and the group id can only be changed while
//! still root, so they go first; setuid last, after which nothing can be taken back. A server
//! asked to drop and unable to refuses to run rather than going on as root.

use std::path::Path;

use crate::error::Error;
use crate::sys;

/// What `--user`, `--group` and `--umask` asked for.
#[derive(Clone, Debug, Default)]
pub struct PrivilegeDrop {
    pub user: Option<String>,
    pub group: Option<String>,
    /// Octal text as given (`"007"`).
    pub umask: Option<String>,
}

/// Parse `--umask` (octal, at most 0777).
pub fn parse_umask(s: &str) -> Result<u32, Error> {
    u32::from_str_radix(s.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            Error::Usage(format!(
                "--umask {s} is not an octal file mode mask; use three octal digits such as 007"
            ))
        })
}

fn resolve_user(name: &str) -> Result<sys::UserEntry, Error> {
    let lookup = |e: std::io::Error| Error::Setup(format!("cannot look up user {name}: {e}"));
    if let Some(u) = sys::user_by_name(name).map_err(lookup)? {
        return Ok(u);
    }
    if let Ok(uid) = name.parse::<libc::uid_t>() {
        return match sys::user_by_id(uid).map_err(lookup)? {
            Some(u) => Ok(u),
            None => Ok(sys::UserEntry {
                name: name.to_string(),
                uid,
                // No passwd entry means no primary group: use the same number unless --group.
                gid: uid,
            }),
        };
    }
    Err(Error::Setup(format!(
        "there is no user named {name}; give an existing user name or a numeric uid to --user"
    )))
}

fn resolve_group(name: &str) -> Result<libc::gid_t, Error> {
    let lookup = |e: std::io::Error| Error::Setup(format!("cannot look up group {name}: {e}"));
    if let Some(g) = sys::group_by_name(name).map_err(lookup)? {
        return Ok(g.gid);
    }
    name.parse::<libc::gid_t>().map_err(|_| {
        Error::Setup(format!(
            "there is no group named {name}; give an existing group name or a numeric gid to --group"
        ))
    })
}

impl PrivilegeDrop {
    /// Check the flags without touching anything (before binding): the umask parses, and
    /// `--group` is not given without `--user`.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(m) = &self.umask {
            parse_umask(m)?;
        }
        if self.group.is_some() && self.user.is_none() {
            return Err(Error::Usage(
                "--group needs --user too; tincan switches group and user together after binding"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Apply after binding. `owned_paths` (Unix socket files just created) are handed to the
    /// new user and given the `--umask` mode. (Removing them at exit still needs the new user to
    /// have write access to their directory; a file left behind is replaced at the next start.)
    pub fn apply(&self, owned_paths: &[&Path]) -> Result<(), Error> {
        self.validate()?;
        // The socket files were made before the umask was set: give them the mode it asks for,
        // so `--umask 007` lets the group connect (connecting needs write permission).
        if let Some(m) = &self.umask {
            let mode = 0o777 & !parse_umask(m)?;
            for p in owned_paths {
                std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
                    .map_err(|e| {
                        Error::Setup(format!(
                            "cannot set the mode of {} to {mode:03o} (--umask): {e}",
                            p.display()
                        ))
                    })?;
            }
        }
        let (_, euid) = sys::uids();
        let Some(user) = &self.user else {
            if euid == 0 {
                tracing::warn!(
                    "running as root; pass --user NAME (e.g. --user nobody) to drop privileges after binding"
                );
            }
            if let Some(m) = &self.umask {
                sys::umask(parse_umask(m)?);
            }
            return Ok(());
        };
        if euid != 0 {
            return Err(Error::Setup(format!(
                "--user {user} needs tincan to start as root (it binds first, then switches to \
                 {user}); run it as root or leave out --user"
            )));
        }
        let entry = resolve_user(user)?;
        if entry.uid == 0 {
            return Err(Error::Setup(format!(
                "--user {user} is root, which drops nothing; pick an unprivileged user such as nobody"
            )));
        }
        let gid = match &self.group {
            Some(g) => resolve_group(g)?,
            None => entry.gid,
        };
        for p in owned_paths {
            std::os::unix::fs::chown(p, Some(entry.uid), Some(gid)).map_err(|e| {
                Error::Setup(format!(
                    "cannot hand {} to user {user}: {e}; refusing to run as root",
                    p.display()
                ))
            })?;
        }
        let fail = |step: &str, e: std::io::Error| {
            Error::Setup(format!(
                "cannot drop privileges to {user} ({step} failed: {e}); refusing to run as root"
            ))
        };
        sys::clear_groups().map_err(|e| fail("setgroups", e))?;
        sys::setgid(gid).map_err(|e| fail("setgid", e))?;
        sys::setuid(entry.uid).map_err(|e| fail("setuid", e))?;
        if let Some(m) = &self.umask {
            sys::umask(parse_umask(m)?);
        }
        // Verify: the ids are what we asked for, no group is left, and root is gone for good.
        let (uid, euid) = sys::uids();
        let (g, eg) = sys::gids();
        let groups = sys::group_count().unwrap_or(usize::MAX);
        if uid != entry.uid || euid != entry.uid || g != gid || eg != gid || groups != 0 {
            return Err(Error::Setup(format!(
                "dropping privileges to {user} left uid {uid}/{euid}, gid {g}/{eg} and {groups} \
                 supplementary groups; refusing to run"
            )));
        }
        if sys::setuid(0).is_ok() {
            return Err(Error::Setup(format!(
                "after switching to {user} the process could become root again; refusing to run"
            )));
        }
        tracing::info!(
            "dropped privileges to user {} (uid {}, gid {gid})",
            entry.name,
            entry.uid
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_is_octal_and_bounded() {
        assert_eq!(parse_umask("007").unwrap(), 0o007);
        assert_eq!(parse_umask("0022").unwrap(), 0o022);
        assert!(parse_umask("8").is_err());
        assert!(parse_umask("1000").is_err());
        assert!(parse_umask("abc").is_err());
    }

    #[test]
    fn group_without_user_is_refused() {
        let d = PrivilegeDrop {
            group: Some("nogroup".into()),
            ..PrivilegeDrop::default()
        };
        assert!(d
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--group needs --user"));
    }

    #[test]
    fn unknown_user_is_a_sentence() {
        let e = resolve_user("no-such-user-tincan").unwrap_err().to_string();
        assert!(
            e.contains("there is no user named no-such-user-tincan"),
            "{e}"
        );
    }
}
