import Kafka

/// Which offset of each partition may be committed: never past a record that is still being
/// handled, however many later records finished first. Also the ledger of what is in flight (how
/// many records, how many payload bytes) that the dispatcher's backpressure reads.
public struct OffsetTracker: Sendable {
    private struct PartitionState {
        /// Offsets begun and not finished, ascending (records arrive in offset order).
        var inFlight: [Int64] = []
        /// Payload bytes of each record of `inFlight` (same index).
        var sizes: [Int] = []
        var highestBegun: Int64 = -1
        /// Lowest offset dropped unprocessed: nothing at or past it may be committed.
        var ceiling: Int64?

        /// Removes the record at `i`; returns its payload bytes.
        mutating func remove(at i: Int) -> Int {
            inFlight.remove(at: i)
            return sizes.remove(at: i)
        }
    }

    private var partitions: [TopicPartition: PartitionState] = [:]

    /// Records in flight over all partitions, kept as they change (read on every submit).
    public private(set) var totalInFlight = 0
    /// Payload bytes of the records in flight (as given to `begin`), kept the same way.
    public private(set) var totalBytesInFlight = 0

    public init() {}

    public mutating func begin(_ tp: TopicPartition, _ offset: Int64, bytes: Int = 0) {
        var s = partitions[tp, default: PartitionState()]
        if let last = s.inFlight.last, offset <= last {
            // Out of order (a redelivery after seek): keep the list sorted.
            let i = s.inFlight.firstIndex { $0 > offset } ?? s.inFlight.endIndex
            if i == s.inFlight.startIndex || s.inFlight[i - 1] != offset {
                s.inFlight.insert(offset, at: i)
                s.sizes.insert(bytes, at: i)
                added(bytes)
            }
        } else {
            s.inFlight.append(offset)
            s.sizes.append(bytes)
            added(bytes)
        }
        s.highestBegun = max(s.highestBegun, offset)
        partitions[tp] = s
    }

    /// Marks the offset finished; returns the next offset to commit when it moved forward.
    public mutating func finish(_ tp: TopicPartition, _ offset: Int64) -> Int64? {
        guard var s = partitions[tp], let i = binarySearch(s.inFlight, offset) else { return nil }
        removed(s.remove(at: i))
        partitions[tp] = s
        guard i == 0 else { return nil }  // an earlier record is still in flight
        // A hostile broker's Int64.max must neither trap nor wrap to a negative offset.
        let next = s.inFlight.first ?? (s.highestBegun == .max ? .max : s.highestBegun + 1)
        return s.ceiling.map { min($0, next) } ?? next
    }

    /// Forgets one offset without making anything committable (a record dropped unprocessed).
    public mutating func discard(_ tp: TopicPartition, _ offset: Int64) {
        guard var s = partitions[tp], let i = binarySearch(s.inFlight, offset) else { return }
        removed(s.remove(at: i))
        s.ceiling = min(s.ceiling ?? offset, offset)
        partitions[tp] = s
    }

    public func inFlight(_ tp: TopicPartition) -> Int { partitions[tp]?.inFlight.count ?? 0 }

    public mutating func forget(_ tp: TopicPartition) {
        guard let s = partitions.removeValue(forKey: tp) else { return }
        totalInFlight -= s.inFlight.count
        totalBytesInFlight -= s.sizes.reduce(0, +)
    }

    private mutating func added(_ bytes: Int) {
        totalInFlight += 1
        totalBytesInFlight += bytes
    }

    private mutating func removed(_ bytes: Int) {
        totalInFlight -= 1
        totalBytesInFlight -= bytes
    }

    private func binarySearch(_ a: [Int64], _ x: Int64) -> Int? {
        var lo = 0
        var hi = a.count - 1
        while lo <= hi {
            let mid = (lo + hi) / 2
            if a[mid] == x { return mid }
            if a[mid] < x { lo = mid + 1 } else { hi = mid - 1 }
        }
        return nil
    }
}
