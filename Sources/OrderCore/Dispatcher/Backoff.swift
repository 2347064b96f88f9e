/// Exponential retry delays: `initial`, doubling, at most `maximum` (e.g. 50 ms → 5 s).
/// A value: each retry loop owns its own.
public struct Backoff: Sendable, Equatable {
    public let initial: Duration
    public let maximum: Duration
    /// The delay the next `wait` sleeps.
    public private(set) var current: Duration

    public init(initial: Duration, maximum: Duration) {
        self.initial = initial
        self.maximum = max(initial, maximum)
        current = initial
    }

    /// Returns the delay to wait now and doubles the next one (up to `maximum`).
    public mutating func next() -> Duration {
        defer { current = min(current * 2, maximum) }
        return current
    }

    /// Sleeps for `next()`; a cancelled sleep returns early (the caller's loop decides what then).
    public mutating func wait() async {
        try? await Task.sleep(for: next())
    }
}
