//! Dropping root after binding: setgroups([]) → setgid → setuid, then umask, then a check that
//! root cannot be regained.
//!
//! The order matters (as the privilege-dropping tutorial explains): supplementary groups and the group id can only be changed while
//! still root, so they go first; setuid last, after which nothing can be taken back. A server
//! asked to drop and unable to refuses to run rather than going on as root.

use std::io;
use std::path::{Path, PathBuf};

use crate::sys;

/// Why privileges could not be dropped, or would not be. The command line words each with its
/// flags (`--user`, `--group`, `--umask`); `Usage` ones are mistakes in what was asked.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("{0} is not an octal file mode mask")]
    BadUmask(String),
    #[error("a group is switched only together with a user")]
    GroupWithoutUser,
    #[error("cannot look up {what} {name}: {source}")]
    Lookup {
        what: &'static str,
        name: String,
        source: io::Error,
    },
    #[error("there is no user named {0}")]
    NoSuchUser(String),
    #[error("there is no group named {0}")]
    NoSuchGroup(String),
    #[error("cannot set the mode of {} to {mode:03o}: {source}", path.display())]
    SocketMode {
        path: PathBuf,
        mode: u32,
        source: io::Error,
    },
    /// Switching to this user needs the process to start as root.
    #[error("switching to user {0} needs tincan to start as root")]
    NotRoot(String),
    /// The user asked for is root itself.
    #[error("user {0} is root, which drops nothing")]
    UserIsRoot(String),
    #[error("cannot hand {} to user {user}: {source}", path.display())]
    Chown {
        path: PathBuf,
        user: String,
        source: io::Error,
    },
    #[error("cannot drop privileges to {user} ({step} failed: {source})")]
    Step {
        user: String,
        step: &'static str,
        source: io::Error,
    },
    #[error("dropping privileges to {user} left uid {uid}/{euid}, gid {gid}/{egid} and {groups} supplementary groups")]
    Unverified {
        user: String,
        uid: u32,
        euid: u32,
        gid: u32,
        egid: u32,
        groups: usize,
    },
    #[error("after switching to {0} the process could become root again")]
    Regained(String),
}

impl PrivilegeError {
    /// A mistake in what was asked (rather than something the system refused).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            PrivilegeError::BadUmask(_) | PrivilegeError::GroupWithoutUser
        )
    }
}

type Result<T> = std::result::Result<T, PrivilegeError>;

/// What `--user`, `--group` and `--umask` asked for.
#[derive(Clone, Debug, Default)]
pub struct PrivilegeDrop {
    pub user: Option<String>,
    pub group: Option<String>,
    /// Octal text as given (`"007"`).
    pub umask: Option<String>,
}

/// Parse a umask (octal, at most 0777).
pub fn parse_umask(s: &str) -> Result<u32> {
    u32::from_str_radix(s.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| PrivilegeError::BadUmask(s.to_string()))
}

fn lookup(what: &'static str, name: &str) -> impl FnOnce(io::Error) -> PrivilegeError {
    let name = name.to_string();
    move |source| PrivilegeError::Lookup { what, name, source }
}

fn resolve_user(name: &str) -> Result<sys::UserEntry> {
    if let Some(u) = sys::user_by_name(name).map_err(lookup("user", name))? {
        return Ok(u);
    }
    if let Ok(uid) = name.parse::<libc::uid_t>() {
        return match sys::user_by_id(uid).map_err(lookup("user", name))? {
            Some(u) => Ok(u),
            None => Ok(sys::UserEntry {
                name: name.to_string(),
                uid,
                // No passwd entry means no primary group: use the same number unless a group
                // is given.
                gid: uid,
            }),
        };
    }
    Err(PrivilegeError::NoSuchUser(name.to_string()))
}

fn resolve_group(name: &str) -> Result<libc::gid_t> {
    if let Some(g) = sys::group_by_name(name).map_err(lookup("group", name))? {
        return Ok(g.gid);
    }
    name.parse::<libc::gid_t>()
        .map_err(|_| PrivilegeError::NoSuchGroup(name.to_string()))
}

impl PrivilegeDrop {
    /// Check what was asked without touching anything (before binding): the umask parses, and
    /// a group is not given without a user.
    pub fn validate(&self) -> Result<()> {
        if let Some(m) = &self.umask {
            parse_umask(m)?;
        }
        if self.group.is_some() && self.user.is_none() {
            return Err(PrivilegeError::GroupWithoutUser);
        }
        Ok(())
    }

    /// Apply after binding. `owned_paths` (Unix socket files just created) are handed to the
    /// new user and given the umask's mode. (Removing them at exit still needs the new user to
    /// have write access to their directory; a file left behind is replaced at the next start.)
    pub fn apply(&self, owned_paths: &[&Path]) -> Result<()> {
        self.validate()?;
        // The socket files were made before the umask was set: give them the mode it asks for,
        // so a umask of 007 lets the group connect (connecting needs write permission).
        if let Some(m) = &self.umask {
            let mode = 0o777 & !parse_umask(m)?;
            for p in owned_paths {
                std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
                    .map_err(|source| PrivilegeError::SocketMode {
                        path: p.to_path_buf(),
                        mode,
                        source,
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
            return Err(PrivilegeError::NotRoot(user.clone()));
        }
        let entry = resolve_user(user)?;
        if entry.uid == 0 {
            return Err(PrivilegeError::UserIsRoot(user.clone()));
        }
        let gid = match &self.group {
            Some(g) => resolve_group(g)?,
            None => entry.gid,
        };
        for p in owned_paths {
            std::os::unix::fs::chown(p, Some(entry.uid), Some(gid)).map_err(|source| {
                PrivilegeError::Chown {
                    path: p.to_path_buf(),
                    user: user.clone(),
                    source,
                }
            })?;
        }
        let fail = |step: &'static str| {
            move |source| PrivilegeError::Step {
                user: user.clone(),
                step,
                source,
            }
        };
        sys::clear_groups().map_err(fail("setgroups"))?;
        sys::setgid(gid).map_err(fail("setgid"))?;
        sys::setuid(entry.uid).map_err(fail("setuid"))?;
        if let Some(m) = &self.umask {
            sys::umask(parse_umask(m)?);
        }
        // Verify: the ids are what we asked for, no group is left, and root is gone for good.
        let (uid, euid) = sys::uids();
        let (g, eg) = sys::gids();
        let groups = sys::group_count().unwrap_or(usize::MAX);
        if uid != entry.uid || euid != entry.uid || g != gid || eg != gid || groups != 0 {
            return Err(PrivilegeError::Unverified {
                user: user.clone(),
                uid,
                euid,
                gid: g,
                egid: eg,
                groups,
            });
        }
        if sys::setuid(0).is_ok() {
            return Err(PrivilegeError::Regained(user.clone()));
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
        assert!(matches!(
            d.validate(),
            Err(PrivilegeError::GroupWithoutUser)
        ));
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
