//! CPU time from /proc, the unit of the cost figures.

/// CPU seconds (user + system) of a process or thread, read from a
/// `/proc/.../stat` file; none when it cannot be read.
pub fn seconds_in(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th, in USER_HZ ticks (100 on Linux).
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds of a process.
pub fn of_process(pid: u32) -> Option<f64> {
    seconds_in(&format!("/proc/{pid}/stat"))
}
