/// Names of the statements one connection has prepared, keyed by SQL text and parameter types (a
/// statement's parameter types are fixed when it is prepared). Bounded: inserting into a full cache
/// evicts the least recently used entry, which the caller must DEALLOCATE. Not thread-safe: it lives
/// in a connection handle and is used only on that connection's queue.
struct StatementCache {
    struct Key: Hashable {
        let sql: String
        let types: [UInt32]
    }

    private struct Entry {
        let name: String
        var lastUse: UInt64
    }

    let capacity: Int
    private var entries: [Key: Entry] = [:]
    private var clock: UInt64 = 0
    private var nextNumber: UInt64 = 0

    init(capacity: Int) {
        precondition(capacity > 0, "a statement cache needs room for at least one statement")
        self.capacity = capacity
    }

    var count: Int { entries.count }

    var isFull: Bool { entries.count >= capacity }

    /// The statement's name, marking it most recently used.
    mutating func name(for key: Key) -> String? {
        clock &+= 1
        guard let index = entries.index(forKey: key) else { return nil }
        entries.values[index].lastUse = clock
        return entries.values[index].name
    }

    /// A name never handed out before on this connection: `_s1`, `_s2`, … (the underscore keeps them
    /// apart from names an application might PREPARE itself).
    mutating func makeName() -> String {
        nextNumber += 1
        return "_s\(nextNumber)"
    }

    /// Removes and returns the least recently used entry's name (linear, but only when full).
    mutating func evictLeastRecentlyUsed() -> String? {
        guard let oldest = entries.min(by: { $0.value.lastUse < $1.value.lastUse }) else { return nil }
        entries[oldest.key] = nil
        return oldest.value.name
    }

    /// Call with the cache not full (evict first).
    mutating func insert(_ key: Key, name: String) {
        precondition(!isFull || entries[key] != nil, "evict before inserting into a full statement cache")
        clock &+= 1
        entries[key] = Entry(name: name, lastUse: clock)
    }

    @discardableResult
    mutating func remove(_ key: Key) -> String? {
        entries.removeValue(forKey: key)?.name
    }

    /// Forgets every entry; for when the server has dropped them (DISCARD ALL, DEALLOCATE ALL).
    mutating func removeAll() {
        entries.removeAll()
    }
}
