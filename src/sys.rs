//! Every `unsafe` system call in tincan, each wrapped in a safe function with a `// SAFETY:`
//! comment: epoll, poll, select, sendfile, eventfd, fork, setuid and friends.
