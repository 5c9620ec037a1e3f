//! Container logs: the shim writes CRI-format lines (`<RFC 3339 time> <stdout|stderr> <F|P>
//! <content>`), rotating at a size limit; the daemon reads them: the last N lines by reading
//! backwards from the end, entries since a time, and following across rotation.
//!
//! A line longer than [`MAX_LINE`] is written as partial (`P`) entries cut on UTF-8 character
//! boundaries, then a final (`F`) one; readers join them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Longest content of one log entry before it is split into partial entries.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Formats `now` as RFC 3339 UTC with nanoseconds (sortable as text).
pub fn timestamp(now: time::OffsetDateTime) -> String {
    let t = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// Splits a byte stream into log entries: complete lines, and partial entries for lines
/// longer than `max` (cut so that no UTF-8 character is split).
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit(content, partial)` for each entry ready.
    pub fn push(&mut self, data: &[u8], max: usize, mut emit: impl FnMut(&[u8], bool)) {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        loop {
            let rest = &self.buf[start..];
            if let Some(nl) = rest.iter().position(|&b| b == b'\n')
                && nl <= max
            {
                emit(&rest[..nl], false);
                start += nl + 1;
                continue;
            }
            if rest.len() > max {
                let cut = utf8_cut(rest, max);
                emit(&rest[..cut], true);
                start += cut;
                continue;
            }
            break;
        }
        self.buf.drain(..start);
    }

    /// Emits what is left (the stream ended without a newline).
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8], bool)) {
        if !self.buf.is_empty() {
            emit(&self.buf, false);
            self.buf.clear();
        }
    }
}

/// The largest cut point ≤ `max` that does not fall inside a UTF-8 sequence.
fn utf8_cut(b: &[u8], max: usize) -> usize {
    let mut cut = max.min(b.len());
    // Step back over continuation bytes (10xxxxxx), at most 3.
    let floor = cut.saturating_sub(3);
    while cut > floor && cut < b.len() && (b[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    if cut == 0 { max.min(b.len()) } else { cut }
}

/// Appends entries to `container.log`, rotating to `.1`, `.2`… when it would pass `max_size`.
/// An entry that cannot be written (a full disk) is dropped whole, never half-written; the
/// next entry that can be is preceded by one saying how much was lost.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: u32,
    /// Bytes of entries dropped since the last successful write.
    dropped: u64,
}

impl LogWriter {
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self { path: path.to_owned(), file, size, max_size: max_size.max(4096), max_files: max_files.max(1), dropped: 0 })
    }

    fn entry(stream: Stream, partial: bool, content: &[u8], ts: &str) -> Vec<u8> {
        let mut line = Vec::with_capacity(content.len() + ts.len() + 12);
        line.extend_from_slice(ts.as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_str().as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(content);
        line.push(b'\n');
        line
    }

    pub fn write(&mut self, stream: Stream, partial: bool, content: &[u8], ts: &str) -> io::Result<()> {
        let line = Self::entry(stream, partial, content, ts);
        if self.dropped > 0 {
            let note = format!("[atoll: {} bytes of output were lost: the disk holding the log was full]", self.dropped);
            if let Err(e) = self.append(&Self::entry(Stream::Stderr, false, note.as_bytes(), ts)) {
                self.dropped += line.len() as u64;
                return Err(e);
            }
            self.dropped = 0;
        }
        self.append(&line).inspect_err(|_| self.dropped += line.len() as u64)
    }

    /// Appends one whole entry, or nothing.
    fn append(&mut self, line: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(line) {
            // Undo a partial write, so readers never see half an entry.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.max_files == 1 {
            self.file = OpenOptions::new().write(true).truncate(true).open(&self.path)?;
            self.size = 0;
            return Ok(());
        }
        let _ = fs::remove_file(rotated(&self.path, self.max_files - 1));
        for i in (1..self.max_files - 1).rev() {
            let _ = fs::rename(rotated(&self.path, i), rotated(&self.path, i + 1));
        }
        fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// `container.log.N`
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// One log line as readers see it (partial entries joined).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogLine {
    pub time: String,
    pub stream: Stream,
    pub line: String,
}

/// Parses one CRI entry: (time, stream, partial, content).
pub fn parse_entry(raw: &[u8]) -> Option<(&str, Stream, bool, &[u8])> {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let mut it = raw.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(it.next()?).ok()?;
    let stream = match it.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match it.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some((time, stream, partial, it.next().unwrap_or(b"")))
}

/// Joins partial entries into lines, per stream.
#[derive(Debug, Default)]
pub struct Joiner {
    pending: [Vec<u8>; 2],
}

impl Joiner {
    pub fn feed(&mut self, raw: &[u8]) -> Option<LogLine> {
        let (time, stream, partial, content) = parse_entry(raw)?;
        let slot = &mut self.pending[stream as usize];
        slot.extend_from_slice(content);
        if partial {
            return None;
        }
        let line = String::from_utf8_lossy(slot).into_owned();
        slot.clear();
        Some(LogLine { time: time.to_owned(), stream, line })
    }
}

/// The log files of a container, oldest first.
pub fn files_oldest_first(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut n = 1;
    while rotated(path, n).exists() {
        out.push(rotated(path, n));
        n += 1;
    }
    out.reverse();
    if path.exists() {
        out.push(path.to_owned());
    }
    out
}

/// The last `n` lines, reading each file backwards from its end in blocks (never whole files),
/// going into older rotated files only if needed.
pub fn tail(path: &Path, n: usize) -> io::Result<Vec<LogLine>> {
    tail_and_end(path, n).map(|(lines, _)| lines)
}

/// [`tail`], plus the length the current file had when it was read: following from there
/// neither repeats nor skips a line.
pub fn tail_and_end(path: &Path, n: usize) -> io::Result<(Vec<LogLine>, u64)> {
    let mut end = 0;
    if n == 0 {
        return Ok((Vec::new(), Follower::end_of(path)));
    }
    // Raw entries, newest first, until we have `n` final (F) entries.
    let mut raw_rev: Vec<Vec<u8>> = Vec::new();
    let mut finals = 0;
    'files: for file in files_oldest_first(path).iter().rev() {
        let mut f = match File::open(file) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut pos = f.seek(SeekFrom::End(0))?;
        if file == path {
            end = pos;
        }
        let mut carry: Vec<u8> = Vec::new();
        const BLOCK: u64 = 64 * 1024;
        while pos > 0 {
            let start = pos.saturating_sub(BLOCK);
            let mut block = vec![0u8; (pos - start) as usize];
            f.seek(SeekFrom::Start(start))?;
            f.read_exact(&mut block)?;
            block.extend_from_slice(&carry);
            let mut lines: Vec<&[u8]> = block.split(|&b| b == b'\n').collect();
            // The first piece may be incomplete unless we are at the file start.
            let head = if start > 0 { lines.remove(0).to_vec() } else { Vec::new() };
            for l in lines.into_iter().rev().filter(|l| !l.is_empty()) {
                if let Some((_, _, partial, _)) = parse_entry(l) {
                    if !partial {
                        if finals == n {
                            break 'files;
                        }
                        finals += 1;
                    }
                    raw_rev.push(l.to_vec());
                }
            }
            carry = head;
            pos = start;
        }
    }
    let mut j = Joiner::default();
    Ok((raw_rev.iter().rev().filter_map(|l| j.feed(l)).collect(), end))
}

/// All lines with a time at or after `since` (RFC 3339 UTC text compares in time order).
pub fn since(path: &Path, since: &str) -> io::Result<Vec<LogLine>> {
    since_and_end(path, since).map(|(lines, _)| lines)
}

/// [`since`], plus how far into the current file it read (complete lines only), to follow
/// from there.
pub fn since_and_end(path: &Path, since: &str) -> io::Result<(Vec<LogLine>, u64)> {
    let mut j = Joiner::default();
    let mut out = Vec::new();
    let mut end = 0;
    for file in files_oldest_first(path) {
        let f = match File::open(&file) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let current = file == path;
        let mut consumed = 0u64;
        let mut reader = BufReader::new(f);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            let n = reader.read_until(b'\n', &mut raw)?;
            if n == 0 || raw.last() != Some(&b'\n') {
                // EOF, or a line still being written: the follower takes it from here.
                break;
            }
            consumed += n as u64;
            if raw.get(..since.len()).is_some_and(|t| t >= since.as_bytes())
                && let Some(l) = j.feed(&raw)
            {
                out.push(l);
            }
        }
        if current {
            end = consumed;
        }
    }
    Ok((out, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write_lines(w: &mut LogWriter, n: usize, ts: impl Fn(usize) -> String) {
        for i in 0..n {
            w.write(Stream::Stdout, false, format!("line {i}").as_bytes(), &ts(i)).unwrap();
        }
    }

    #[test]
    fn rotation_keeps_disk_use_bounded_and_tail_spans_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("container.log");
        let mut w = LogWriter::open(&p, 4096, 3).unwrap();
        write_lines(&mut w, 1000, |i| format!("2026-01-01T00:00:{:02}.{i:09}Z", i / 100));
        let files = files_oldest_first(&p);
        assert_eq!(files.len(), 3);
        let total: u64 = files.iter().map(|f| fs::metadata(f).unwrap().len()).sum();
        assert!(total <= 3 * 4096, "{total}");
        let last = tail(&p, 5).unwrap();
        assert_eq!(last.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), ["line 995", "line 996", "line 997", "line 998", "line 999"]);
        // More lines than the newest file holds: tail reaches into older ones, in order.
        let many = tail(&p, 150).unwrap();
        assert_eq!(many.len(), 150);
        assert_eq!(many.last().unwrap().line, "line 999");
        assert_eq!(many[0].line, "line 850");
    }

    #[test]
    fn long_lines_are_split_on_char_boundaries_and_joined_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("container.log");
        let mut w = LogWriter::open(&p, 1 << 20, 2).unwrap();
        let long = "é".repeat(MAX_LINE); // 2 bytes each: must split mid-line
        let mut s = LineSplitter::default();
        let mut entries = Vec::new();
        s.push(format!("{long}\nshort\n").as_bytes(), MAX_LINE, |c, p| entries.push((c.to_vec(), p)));
        assert!(entries.len() >= 3);
        for (c, _) in &entries {
            assert!(std::str::from_utf8(c).is_ok(), "an entry was cut inside a character");
        }
        for (c, p) in &entries {
            w.write(Stream::Stderr, *p, c, "2026-01-01T00:00:00.000000000Z").unwrap();
        }
        let lines = tail(&p, 2).unwrap();
        assert_eq!(lines[0].line, long);
        assert_eq!(lines[0].stream, Stream::Stderr);
        assert_eq!(lines[1].line, "short");
    }

    #[test]
    fn since_filters_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("container.log");
        let mut w = LogWriter::open(&p, 1 << 20, 2).unwrap();
        write_lines(&mut w, 10, |i| format!("2026-01-01T00:00:{i:02}.000000000Z"));
        let got = since(&p, "2026-01-01T00:00:07").unwrap();
        assert_eq!(got.len(), 3);
    }

    proptest! {
        /// Whatever the chunking, splitting then joining gives back the lines.
        #[test]
        fn split_join_roundtrip(lines in prop::collection::vec("\\PC{0,60}", 1..20), chunk in 1usize..50, max in 8usize..64) {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let mut s = LineSplitter::default();
            let mut j = Joiner::default();
            let mut out = Vec::new();
            for c in text.as_bytes().chunks(chunk) {
                s.push(c, max, |content, partial| {
                    let raw = [b"2026-01-01T00:00:00Z stdout ".as_slice(), if partial { b"P " } else { b"F " }, content].concat();
                    if let Some(l) = j.feed(&raw) { out.push(l.line); }
                });
            }
            prop_assert_eq!(out, lines);
        }
    }
}

/// Follows a container log from a byte offset of its current file, across rotations.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    ino: u64,
    pos: u64,
    carry: Vec<u8>,
    joiner: Joiner,
}

fn inode(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p).ok().map(|m| m.ino())
}

impl Follower {
    /// Starts at `pos` of the current file (use its length to see only new lines).
    pub fn new(path: &Path, pos: u64) -> Self {
        let file = File::open(path).ok();
        let ino = file.as_ref().and_then(|f| f.metadata().ok()).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap_or(0);
        Self { path: path.to_owned(), file, ino, pos, carry: Vec::new(), joiner: Joiner::default() }
    }

    /// The current file's length now (a starting point that skips existing lines).
    pub fn end_of(path: &Path) -> u64 {
        fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    /// Reads whatever is new; follows a rotation when the current file is exhausted.
    pub fn poll(&mut self) -> io::Result<Vec<LogLine>> {
        let mut out = Vec::new();
        loop {
            let Some(f) = self.file.as_mut() else {
                // Not created yet (or removed): try again later.
                self.file = File::open(&self.path).ok();
                self.ino = inode(&self.path).unwrap_or(0);
                self.pos = 0;
                if self.file.is_none() {
                    return Ok(out);
                }
                continue;
            };
            f.seek(SeekFrom::Start(self.pos))?;
            let mut buf = Vec::new();
            let n = f.take(4 << 20).read_to_end(&mut buf)?;
            self.pos += n as u64;
            if n > 0 {
                self.carry.extend_from_slice(&buf);
                while let Some(nl) = self.carry.iter().position(|&b| b == b'\n') {
                    let raw: Vec<u8> = self.carry.drain(..=nl).collect();
                    if let Some(l) = self.joiner.feed(&raw) {
                        out.push(l);
                    }
                }
                continue;
            }
            // At the end of our file: did the shim rotate to a new one?
            match inode(&self.path) {
                Some(i) if i != self.ino => {
                    self.file = File::open(&self.path).ok();
                    self.ino = i;
                    self.pos = 0;
                }
                _ => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod follow_tests {
    use super::*;

    /// Regression: `logs -f` took the follow offset before reading the initial lines, so lines
    /// written in between came out twice. The offset must be where the initial read stopped.
    #[test]
    fn follow_resumes_exactly_where_the_initial_read_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("container.log");
        let mut w = LogWriter::open(&p, 1 << 20, 2).unwrap();
        w.write(Stream::Stdout, false, b"a", "2026-01-01T00:00:00Z").unwrap();
        // A half-written line at the end must not be counted as read.
        fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"2026-01-01T00:00:00Z stdout F b").unwrap();
        let (lines, end) = since_and_end(&p, "").unwrap();
        assert_eq!(lines.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), ["a"]);
        fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"\n").unwrap();
        w.write(Stream::Stdout, false, b"c", "2026-01-01T00:00:00Z").unwrap();
        let mut f = Follower::new(&p, end);
        assert_eq!(f.poll().unwrap().iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        let (t, tend) = tail_and_end(&p, 1).unwrap();
        assert_eq!(t[0].line, "c");
        assert_eq!(tend, Follower::end_of(&p));
    }

    #[test]
    fn follower_sees_new_lines_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("container.log");
        let mut w = LogWriter::open(&p, 4096, 3).unwrap();
        w.write(Stream::Stdout, false, b"old", "2026-01-01T00:00:00Z").unwrap();
        let mut f = Follower::new(&p, Follower::end_of(&p));
        assert!(f.poll().unwrap().is_empty(), "existing lines are skipped");
        let mut seen = Vec::new();
        for i in 0..300 {
            w.write(Stream::Stdout, false, format!("n{i:04}").as_bytes(), "2026-01-01T00:00:00Z").unwrap();
            if i % 7 == 0 {
                seen.extend(f.poll().unwrap().into_iter().map(|l| l.line));
            }
        }
        seen.extend(f.poll().unwrap().into_iter().map(|l| l.line));
        let want: Vec<String> = (0..300).map(|i| format!("n{i:04}")).collect();
        assert_eq!(seen, want, "no line lost or repeated across rotations");
    }
}
