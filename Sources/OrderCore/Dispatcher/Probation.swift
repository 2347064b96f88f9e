import Kafka

/// Partitions on probation after an unclean exit in the group: their first records (a budget
/// shared by all of them) run one at a time, in arrival order, in a single lane (behind a durable
/// marker, see `Dispatcher`). One lane for all, not one per partition: when the process dies,
/// exactly one marked record was in progress, so only the culprit is counted, never a record of
/// another partition that happened to run at the same moment. Records that arrive once the budget
/// is used up wait until the lane has finished, then go to their key lanes, so no key ever has
/// records in two lanes at once.
struct Probation {
    enum Route: Equatable {
        /// Not on probation: the record's own key lane.
        case normal
        /// The probation lane, behind the marker.
        case probation
        /// Kept back until the probation lane has finished.
        case held
    }

    private struct Position: Hashable {
        var tp: TopicPartition
        var offset: Int64
    }

    private var partitions: Set<TopicPartition> = []
    /// Records still to take through the probation lane.
    private var remaining = 0
    /// Probation ends at this instant even when fewer records came (quiet partitions).
    private var until = ContinuousClock.now
    /// Records routed into the lane and not completed yet.
    private var inLane: Set<Position> = []
    /// Records that came after the budget was used up, in arrival order.
    private var held: [KafkaRecord] = []

    /// True when no partition is on probation: the dispatcher's only test on the normal path.
    var isEmpty: Bool { partitions.isEmpty }

    func contains(_ tp: TopicPartition) -> Bool { partitions.contains(tp) }

    /// Puts partitions on probation with a fresh budget of `records` for at most `duration`. While
    /// records are held back the budget is not renewed (they would be overtaken by later records
    /// of their partitions); the new partitions then just wait for the lane like the others.
    mutating func enter(_ tps: some Sequence<TopicPartition>, records: Int, duration: Duration, now: ContinuousClock.Instant = .now) {
        guard records > 0 else { return }
        partitions.formUnion(tps)
        guard held.isEmpty else { return }
        remaining = records
        until = now + duration
    }

    /// Where the record goes.
    mutating func route(_ record: KafkaRecord, now: @autoclosure () -> ContinuousClock.Instant = .now) -> Route {
        guard partitions.contains(record.topicPartition) else { return .normal }
        if remaining > 0, now() >= until { remaining = 0 }
        if remaining > 0 {
            remaining -= 1
            inLane.insert(Position(tp: record.topicPartition, offset: record.offset))
            return .probation
        }
        if inLane.isEmpty {
            partitions = []
            return .normal
        }
        held.append(record)
        return .held
    }

    /// A probation record completed. When that ends probation, returns the records held back,
    /// in arrival order, for their key lanes.
    mutating func completed(_ tp: TopicPartition, offset: Int64) -> [KafkaRecord] {
        guard inLane.remove(Position(tp: tp, offset: offset)) != nil else { return [] }
        return endIfDone()
    }

    /// Partitions given up: returns their held records (dropped: not started) and, when that
    /// ends probation, the other held records (released to their key lanes).
    mutating func leave(_ tps: Set<TopicPartition>) -> (dropped: [KafkaRecord], released: [KafkaRecord]) {
        guard !partitions.isDisjoint(with: tps) else { return ([], []) }
        partitions.subtract(tps)
        inLane = inLane.filter { !tps.contains($0.tp) }
        let dropped = held.filter { tps.contains($0.topicPartition) }
        held.removeAll { tps.contains($0.topicPartition) }
        if partitions.isEmpty {
            defer { held = []; inLane = []; remaining = 0 }
            return (dropped, held)
        }
        return (dropped, endIfDone())
    }

    /// A graceful stop: nothing held will start.
    mutating func removeAll() {
        self = Probation()
    }

    private mutating func endIfDone() -> [KafkaRecord] {
        guard inLane.isEmpty, remaining == 0 else { return [] }
        partitions = []
        defer { held = [] }
        return held
    }
}
