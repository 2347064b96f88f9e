/// A condition a thread outside the cooperative pool (the consumer's poll thread) waits on until a
/// predicate holds: one condition variable, no polling. `signal` after changing what the
/// predicate reads; the predicate is checked under the condition's lock, so no wake-up is lost.
final class ThreadSignal: Sendable {
    private let condition = ConditionBox()

    /// True when `predicate` held before the timeout passed.
    func wait(timeout: Duration, until predicate: () -> Bool) -> Bool {
        let deadline = ContinuousClock.now + timeout
        condition.lock()
        defer { condition.unlock() }
        while !predicate() {
            let left = deadline - ContinuousClock.now
            if left <= .zero { return false }
            _ = condition.wait(seconds: Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18)
        }
        return true
    }

    func signal() {
        condition.lock()
        condition.broadcast()
        condition.unlock()
    }
}
