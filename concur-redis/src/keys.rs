//! [`Keys`]: the names of the Redis keys one queue uses.

/// The consumer group every worker of a queue joins.
pub const GROUP: &str = "workers";

/// The Redis keys of one queue. Every key shares the hash tag `{queue}`, so
/// a queue's keys land on one slot and one `MULTI` may touch them all.
///
/// Operators read them with the usual commands: `XLEN` and `XINFO GROUPS`
/// on [`tasks`](Self::tasks) (the `lag` and `pending` of group
/// [`GROUP`] are the backlog and the tasks running), `XRANGE` on
/// [`dead`](Self::dead) for quarantined tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    queue: String,
}

impl Keys {
    /// The keys of queue `queue`.
    pub fn new(queue: &str) -> Self {
        Self {
            queue: queue.to_owned(),
        }
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    fn key(&self, rest: &str) -> String {
        format!("concur:{{{}}}:{rest}", self.queue)
    }

    /// The stream of submitted tasks, read by the consumer group [`GROUP`].
    pub fn tasks(&self) -> String {
        self.key("tasks")
    }

    /// The dead-letter stream: entries delivered past their retry limit and
    /// entries that could not be read, each with the reason.
    pub fn dead(&self) -> String {
        self.key("dead")
    }

    /// The control stream every worker follows (cancel and stop requests).
    pub fn control(&self) -> String {
        self.key("control")
    }

    /// The result stream of the pool (submitter) `pool`: results, messages
    /// from its tasks and its local workers' readiness.
    pub fn results(&self, pool: &str) -> String {
        self.key(&format!("results:{pool}"))
    }

    /// The stream of messages from the caller to task `task` of pool `pool`.
    pub fn down(&self, pool: &str, task: u64) -> String {
        self.key(&format!("down:{pool}:{task}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_queue_hash_tag() {
        let k = Keys::new("jobs");
        assert_eq!(k.tasks(), "concur:{jobs}:tasks");
        assert_eq!(k.results("p1"), "concur:{jobs}:results:p1");
        assert_eq!(k.down("p1", 7), "concur:{jobs}:down:p1:7");
        assert!(k.dead().contains("{jobs}") && k.control().contains("{jobs}"));
    }
}
