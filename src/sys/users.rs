//! Users, groups and privileges: the password and group databases (the reentrant `_r` calls),
//! the process's ids, and the switch to an unprivileged user after binding.

use std::ffi::{CStr, CString};
use std::io;

use super::cvt;

/// A user from the password database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEntry {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// A group from the group database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: libc::gid_t,
}

/// Run a `get*_r` lookup, growing the scratch buffer on ERANGE.
fn lookup_r<T>(
    mut f: impl FnMut(&mut Vec<libc::c_char>) -> Result<Option<T>, i32>,
) -> io::Result<Option<T>> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        match f(&mut buf) {
            Ok(v) => return Ok(v),
            Err(libc::ERANGE) if buf.len() < (1 << 20) => {
                let n = buf.len() * 2;
                buf.resize(n, 0);
            }
            Err(e) => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

fn cstr_to_string(p: *const libc::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the pointer comes from a passwd/group record the libc just filled in, whose
    // strings are NUL-terminated and live in the scratch buffer we still borrow.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// What a getpw*_r call left: `rc`, its error number; `found`, whether it filled `pw`.
fn user_entry(
    rc: libc::c_int,
    found: bool,
    pw: &libc::passwd,
) -> Result<Option<UserEntry>, libc::c_int> {
    if rc != 0 {
        return Err(rc);
    }
    Ok(found.then(|| UserEntry {
        name: cstr_to_string(pw.pw_name),
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    }))
}

/// Look up a user by name (getpwnam_r).
pub fn user_by_name(name: &str) -> io::Result<Option<UserEntry>> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    lookup_r(|buf| {
        // SAFETY: all-zero is a valid passwd (null pointers, zero ids); the libc fills it in.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer refers to a live local or to `buf`, whose real length is
        // passed; the strings written into `pw` point into `buf`, which outlives their use.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        user_entry(rc, !result.is_null(), &pw)
    })
}

/// Look up a user by id (getpwuid_r).
pub fn user_by_id(uid: libc::uid_t) -> io::Result<Option<UserEntry>> {
    lookup_r(|buf| {
        // SAFETY: as in user_by_name.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: as in user_by_name.
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result) };
        user_entry(rc, !result.is_null(), &pw)
    })
}

/// Look up a group by name (getgrnam_r).
pub fn group_by_name(name: &str) -> io::Result<Option<GroupEntry>> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    lookup_r(|buf| {
        // SAFETY: all-zero is a valid group record; the libc fills it in.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer refers to a live local or to `buf` with its real length.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut gr,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 {
            return Err(rc);
        }
        Ok((!result.is_null()).then(|| GroupEntry {
            name: cstr_to_string(gr.gr_name),
            gid: gr.gr_gid,
        }))
    })
}

/// The real and effective user ids.
pub fn uids() -> (libc::uid_t, libc::uid_t) {
    // SAFETY: getuid and geteuid cannot fail and take no arguments.
    unsafe { (libc::getuid(), libc::geteuid()) }
}

/// The real and effective group ids.
pub fn gids() -> (libc::gid_t, libc::gid_t) {
    // SAFETY: getgid and getegid cannot fail and take no arguments.
    unsafe { (libc::getgid(), libc::getegid()) }
}

/// Drop every supplementary group (root's groups must not follow us down).
pub fn clear_groups() -> io::Result<()> {
    // SAFETY: a zero-length list with a null pointer is the documented way to clear the list.
    cvt(unsafe { libc::setgroups(0, std::ptr::null()) })?;
    Ok(())
}

/// The number of supplementary groups this process still has.
pub fn group_count() -> io::Result<usize> {
    // SAFETY: size 0 with a null list only asks for the count.
    let n = cvt(unsafe { libc::getgroups(0, std::ptr::null_mut()) })?;
    Ok(n as usize)
}

/// setgid(2): real, effective and saved group id (glibc applies it to every thread).
pub fn setgid(gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: integer argument only.
    cvt(unsafe { libc::setgid(gid) })?;
    Ok(())
}

/// setuid(2): real, effective and saved user id (glibc applies it to every thread).
pub fn setuid(uid: libc::uid_t) -> io::Result<()> {
    // SAFETY: integer argument only.
    cvt(unsafe { libc::setuid(uid) })?;
    Ok(())
}
