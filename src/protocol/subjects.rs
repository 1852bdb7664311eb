//! Where work is sent: the two kinds of work and their subjects under a prefix
//! (`docs/protocol.md`, "Subjects").

/// The two kinds of work a worker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum JobKind {
    Encode,
    Rank,
}

impl JobKind {
    pub(crate) const ALL: [JobKind; 2] = [JobKind::Encode, JobKind::Rank];

    /// The last token of its subjects, and the service endpoint's name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobKind::Encode => "encode",
            JobKind::Rank => "rank",
        }
    }

    /// The kind named by a subject's last token (`clip.jobs.rank` → rank).
    pub(crate) fn of_subject(subject: &str) -> Option<JobKind> {
        let last = subject.rsplit('.').next()?;
        JobKind::ALL.into_iter().find(|k| k.as_str() == last)
    }
}

/// The subjects under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subjects {
    prefix: String,
}

impl Subjects {
    pub(crate) fn new(prefix: impl Into<String>) -> Self {
        Subjects {
            prefix: prefix.into(),
        }
    }

    /// Request/reply: `<prefix>.encode`, `<prefix>.rank`.
    pub(crate) fn request(&self, kind: JobKind) -> String {
        format!("{}.{}", self.prefix, kind.as_str())
    }

    /// Durable jobs: `<prefix>.jobs.encode`, `<prefix>.jobs.rank`.
    pub(crate) fn job(&self, kind: JobKind) -> String {
        format!("{}.jobs.{}", self.prefix, kind.as_str())
    }

    /// Every durable-job subject (what the jobs stream captures).
    pub(crate) fn jobs(&self) -> Vec<String> {
        JobKind::ALL.into_iter().map(|k| self.job(k)).collect()
    }

    /// Where results of jobs without a `Clip-Reply-To` header go: `<prefix>.results`.
    pub(crate) fn results(&self) -> String {
        format!("{}.results", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_under_a_prefix() {
        let s = Subjects::new("clip");
        assert_eq!(s.request(JobKind::Encode), "clip.encode");
        assert_eq!(s.job(JobKind::Rank), "clip.jobs.rank");
        assert_eq!(s.jobs(), ["clip.jobs.encode", "clip.jobs.rank"]);
        assert_eq!(s.results(), "clip.results");
        assert_eq!(JobKind::of_subject("a.b.jobs.rank"), Some(JobKind::Rank));
        assert_eq!(
            JobKind::of_subject("clip.jobs.encode"),
            Some(JobKind::Encode)
        );
        assert_eq!(JobKind::of_subject("clip.jobs.other"), None);
        assert_eq!(JobKind::of_subject("clip.jobs.xencode"), None);
    }
}
