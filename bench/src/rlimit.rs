//! The open-file limit (`RLIMIT_NOFILE`): many connections need many file
//! descriptors, and the soft limit is often far below the hard one.

/// Soft and hard `RLIMIT_NOFILE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    pub soft: u64,
    pub hard: u64,
}

/// The current limits.
pub fn nofile() -> Result<NoFile, String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return Err(format!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        ));
    }
    // rlim_t is u64 on Linux but not on every platform.
    #[allow(clippy::unnecessary_cast)]
    Ok(NoFile {
        soft: lim.rlim_cur as u64,
        hard: lim.rlim_max as u64,
    })
}

/// Raise the soft limit to the hard one (an unprivileged process may do
/// this; raising the hard limit needs CAP_SYS_RESOURCE). Returns the limits
/// now in force.
pub fn raise_nofile_to_hard() -> Result<NoFile, String> {
    let cur = nofile()?;
    if cur.soft >= cur.hard {
        return Ok(cur);
    }
    let lim = libc::rlimit {
        rlim_cur: cur.hard as libc::rlim_t,
        rlim_max: cur.hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads one rlimit from the struct we own.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    if rc != 0 {
        return Err(format!(
            "setrlimit(RLIMIT_NOFILE, {}): {}",
            cur.hard,
            std::io::Error::last_os_error()
        ));
    }
    nofile()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_reaches_hard() {
        let before = nofile().expect("getrlimit");
        assert!(before.soft <= before.hard);
        let after = raise_nofile_to_hard().expect("setrlimit");
        assert_eq!(after.soft, after.hard);
        assert_eq!(after.hard, before.hard);
    }
}
