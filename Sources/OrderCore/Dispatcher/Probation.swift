import Kafka

/// Partitions on probation after an unclean exit in the group: their first records run one at a
/// time, in offset order, in one lane per partition (behind a durable marker, see `Dispatcher`).
/// Records that arrive once a partition has used up its probation wait until the probation lane
/// has finished, then go to their key lanes, so no key ever has records in two lanes at once.
struct Probation {
    private struct Partition {
        /// Records still to take through the probation lane.
        var remaining: Int
        /// Probation ends at this instant even when fewer records came (a quiet partition).
        var until: ContinuousClock.Instant
        /// Offsets routed into the probation lane and not completed yet.
        var inLane: Set<Int64> = []
        /// Records that came after the probation ones, waiting for the lane to finish.
        var held: [KafkaRecord] = []
    }

    enum Route: Equatable {
        /// Not on probation: the record's own key lane.
        case normal
        /// The partition's probation lane, behind the marker.
        case probation
        /// Kept back until the probation lane of its partition has finished.
        case held
    }

    private var partitions: [TopicPartition: Partition] = [:]

    /// True when no partition is on probation: the dispatcher's only test on the normal path.
    var isEmpty: Bool { partitions.isEmpty }

    func contains(_ tp: TopicPartition) -> Bool { partitions[tp] != nil }

    /// Puts a partition on probation for its next `records` records, for at most `duration`.
    /// A partition already on probation keeps its state.
    mutating func enter(_ tp: TopicPartition, records: Int, duration: Duration, now: ContinuousClock.Instant = .now) {
        guard records > 0, partitions[tp] == nil else { return }
        partitions[tp] = Partition(remaining: records, until: now + duration)
    }

    /// Where the partition's next record goes.
    mutating func route(_ record: KafkaRecord, now: @autoclosure () -> ContinuousClock.Instant = .now) -> Route {
        let tp = record.topicPartition
        guard var p = partitions[tp] else { return .normal }
        if p.remaining > 0, now() >= p.until { p.remaining = 0 }
        if p.remaining > 0 {
            p.remaining -= 1
            p.inLane.insert(record.offset)
            partitions[tp] = p
            return .probation
        }
        if p.inLane.isEmpty {
            partitions[tp] = nil
            return .normal
        }
        p.held.append(record)
        partitions[tp] = p
        return .held
    }

    /// A probation record completed. When that ends the partition's probation, returns the
    /// records held back, in offset order, for their key lanes.
    mutating func completed(_ tp: TopicPartition, offset: Int64) -> [KafkaRecord] {
        guard var p = partitions[tp], p.inLane.remove(offset) != nil else { return [] }
        if p.inLane.isEmpty, p.remaining == 0 {
            partitions[tp] = nil
            return p.held
        }
        partitions[tp] = p
        return []
    }

    /// Partitions given up: their probation ends; returns their held records (not started).
    mutating func leave(_ tps: Set<TopicPartition>) -> [KafkaRecord] {
        var dropped: [KafkaRecord] = []
        for tp in tps {
            if let p = partitions.removeValue(forKey: tp) { dropped += p.held }
        }
        return dropped
    }

    /// A graceful stop: nothing held will start.
    mutating func removeAll() -> [KafkaRecord] {
        defer { partitions = [:] }
        return partitions.values.flatMap(\.held)
    }
}
