import Foundation

/// NSCondition wrapper; used only off the cooperative pool (poll threads).
final class ConditionBox: @unchecked Sendable {
    private let c = NSCondition()
    func lock() { c.lock() }
    func unlock() { c.unlock() }
    func signal() { c.signal() }
    func broadcast() { c.broadcast() }
    func wait(seconds: Double) -> Bool { c.wait(until: Date(timeIntervalSinceNow: seconds)) }
}
