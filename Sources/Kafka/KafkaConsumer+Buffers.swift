extension KafkaConsumer {
    /// Fetched records not yet handed out, per partition, each partition's in offset order.
    /// Partitions take turns (round robin) rather than the oldest record going first: a broker may
    /// return one topic's whole backlog before another's (Tansu fills a fetch topic by topic), and
    /// oldest-first would make the other topic's records wait behind all of it.
    struct Buffers {
        private var queues: [TopicPartition: Queue] = [:]
        /// The partitions in `queues`, in turn order; `next` is the one whose turn it is.
        private var ring: [TopicPartition] = []
        private var next = 0

        private struct Queue {
            var items: [KafkaRecord] = []
            var head = 0
            /// `payloadBytes` of the records held.
            var bytes = 0
            var count: Int { items.count - head }
            mutating func popFirst() -> KafkaRecord? {
                guard head < items.count else { return nil }
                let r = items[head]
                head += 1
                bytes -= r.payloadBytes
                // Compact now and then, so a long-lived queue does not keep every record it held.
                if head >= 64 && head * 2 >= items.count {
                    items.removeFirst(head)
                    head = 0
                }
                return r
            }
        }

        func count(_ tp: TopicPartition) -> Int { queues[tp]?.count ?? 0 }

        /// Payload bytes (`KafkaRecord.payloadBytes`) the partition holds.
        func bytes(_ tp: TopicPartition) -> Int { queues[tp]?.bytes ?? 0 }

        var totalCount: Int { queues.values.reduce(0) { $0 + $1.count } }

        var isEmpty: Bool { ring.isEmpty }

        /// The partitions holding records, in turn order starting with the next one.
        var partitionsInTurn: [TopicPartition] {
            ring.indices.map { ring[(next + $0) % ring.count] }
        }

        /// Appends; returns how many records the partition now holds.
        mutating func append(_ record: KafkaRecord) -> Int {
            let tp = record.topicPartition
            var queue = queues.removeValue(forKey: tp) ?? {
                ring.append(tp)
                return Queue()
            }()
            queue.items.append(record)
            queue.bytes += record.payloadBytes
            let count = queue.count
            queues[tp] = queue
            return count
        }

        /// The next record of the next partition in turn that is not in `skipping`, and how many
        /// that partition still holds.
        mutating func popNext(skipping: Set<TopicPartition>) -> (record: KafkaRecord, left: Int)? {
            var found: Int?
            for step in ring.indices where !skipping.contains(ring[(next + step) % ring.count]) {
                found = (next + step) % ring.count
                break
            }
            guard let i = found else { return nil }
            let tp = ring[i]
            guard var queue = queues.removeValue(forKey: tp), let record = queue.popFirst() else {
                // Never happens (a partition is in the ring only while it holds records); heal.
                ring.remove(at: i)
                next = ring.isEmpty ? 0 : i % ring.count
                return popNext(skipping: skipping)
            }
            let left = queue.count
            if left == 0 {
                ring.remove(at: i)
                next = ring.isEmpty ? 0 : i % ring.count
            } else {
                queues[tp] = queue
                next = (i + 1) % ring.count
            }
            return (record, left)
        }

        /// Drops the records of the partitions `drop` selects.
        mutating func removeAll(where drop: (TopicPartition) -> Bool) {
            // The partition whose turn is next keeps it: count the dropped ones before it.
            let before = ring.prefix(next).filter(drop).count
            ring.removeAll(where: drop)
            queues = queues.filter { !drop($0.key) }
            next = ring.isEmpty ? 0 : (next - before) % ring.count
        }
    }
}
