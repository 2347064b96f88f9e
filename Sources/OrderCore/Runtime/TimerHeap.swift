/// Elements (jobs) waiting for a monotonic deadline, earliest first; equal deadlines leave in the order they
/// came. A binary min-heap in one array, so a timer costs no allocation once the array has grown.
struct TimerHeap<Element> {
    struct Entry {
        /// CLOCK_MONOTONIC nanoseconds.
        let deadline: UInt64
        let sequence: UInt64
        let element: Element

        func precedes(_ other: Entry) -> Bool {
            deadline != other.deadline ? deadline < other.deadline : sequence < other.sequence
        }
    }

    private var entries: [Entry] = []
    private var nextSequence: UInt64 = 0

    var isEmpty: Bool { entries.isEmpty }
    var count: Int { entries.count }
    var earliestDeadline: UInt64? { entries.first?.deadline }

    mutating func insert(_ element: Element, deadline: UInt64) {
        entries.append(Entry(deadline: deadline, sequence: nextSequence, element: element))
        nextSequence &+= 1
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].precedes(entries[parent]) else { break }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    /// Moves every element whose deadline is at or before `now` to `ready`, earliest first.
    mutating func popDue(now: UInt64, into ready: inout [Element]) {
        while let first = entries.first, first.deadline <= now {
            ready.append(first.element)
            removeFirst()
        }
    }

    private mutating func removeFirst() {
        let last = entries.removeLast()
        guard !entries.isEmpty else { return }
        entries[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < entries.count, entries[left].precedes(entries[smallest]) { smallest = left }
            if right < entries.count, entries[right].precedes(entries[smallest]) { smallest = right }
            if smallest == parent { return }
            entries.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
