//! Dropping root after binding: setgroups([]) → setgid → setuid, then umask, then a check that
//! root cannot be regained.
