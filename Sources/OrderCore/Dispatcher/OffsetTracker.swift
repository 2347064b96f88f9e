import Kafka

/// Which offset of each partition may be committed: never past a record that is still being
/// handled, however many later records finished first. Also the ledger of what is in flight (how
/// many records, how many payload bytes) that the dispatcher's backpressure reads.
public struct OffsetTracker: Sendable {
    private struct PartitionState {
        /// Offsets begun and not finished, ascending (records arrive in offset order).
        var inFlight: [Int64] = []
        /// Payload bytes of each record of `inFlight` (same index), and their sum.
        var sizes: [Int] = []
        var bytes = 0
        var highestBegun: Int64 = -1
        /// Lowest offset dropped unprocessed: nothing at or past it may be committed.
        var ceiling: Int64?

        mutating func remove(at i: Int) {
            inFlight.remove(at: i)
            bytes -= sizes.remove(at: i)
        }
    }

    private var partitions: [TopicPartition: PartitionState] = [:]

    public init() {}

    public mutating func begin(_ tp: TopicPartition, _ offset: Int64, bytes: Int = 0) {
        var s = partitions[tp, default: PartitionState()]
        if let last = s.inFlight.last, offset <= last {
            // Out of order (a redelivery after seek): keep the list sorted.
            let i = s.inFlight.firstIndex { $0 > offset } ?? s.inFlight.endIndex
            if i == s.inFlight.startIndex || s.inFlight[i - 1] != offset {
                s.inFlight.insert(offset, at: i)
                s.sizes.insert(bytes, at: i)
                s.bytes += bytes
            }
        } else {
            s.inFlight.append(offset)
            s.sizes.append(bytes)
            s.bytes += bytes
        }
        s.highestBegun = max(s.highestBegun, offset)
        partitions[tp] = s
    }

    /// Marks the offset finished; returns the next offset to commit when it moved forward.
    public mutating func finish(_ tp: TopicPartition, _ offset: Int64) -> Int64? {
        guard var s = partitions[tp], let i = binarySearch(s.inFlight, offset) else { return nil }
        s.remove(at: i)
        partitions[tp] = s
        guard i == 0 else { return nil }  // an earlier record is still in flight
        let next = s.inFlight.first ?? (s.highestBegun + 1)
        return s.ceiling.map { min($0, next) } ?? next
    }

    /// Forgets one offset without making anything committable (a record dropped unprocessed).
    public mutating func discard(_ tp: TopicPartition, _ offset: Int64) {
        guard var s = partitions[tp], let i = binarySearch(s.inFlight, offset) else { return }
        s.remove(at: i)
        s.ceiling = min(s.ceiling ?? offset, offset)
        partitions[tp] = s
    }

    public func inFlight(_ tp: TopicPartition) -> Int { partitions[tp]?.inFlight.count ?? 0 }

    public var totalInFlight: Int { partitions.values.reduce(0) { $0 + $1.inFlight.count } }

    /// Payload bytes of the records in flight (as given to `begin`).
    public var totalBytesInFlight: Int { partitions.values.reduce(0) { $0 + $1.bytes } }

    public mutating func forget(_ tp: TopicPartition) { partitions[tp] = nil }

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
