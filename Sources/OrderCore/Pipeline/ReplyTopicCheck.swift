/// Whether a `reply-to` topic exists, checked before a request takes effect, so that a reply
/// that could never be written is answered `invalid_reply_to` on the default topic instead of
/// stalling its partition. Declared response topics are not checked (the service creates them);
/// allow-listed ones are, from the cluster's metadata: a topic seen is trusted for `trustFor`,
/// and the metadata is asked at most once per `refreshAtMost` (one request serves every caller
/// waiting meanwhile), so a flood of bad reply-to names costs four requests a second; a topic
/// created less than that long ago may still count as missing.
/// When the metadata cannot be read (broker trouble) the topic is assumed to exist: the send is
/// then retried like any other during an outage.
public actor ReplyTopicCheck {
    private let topicNames: @Sendable () async throws -> Set<String>
    private let trustFor: Duration
    private let refreshAtMost: Duration
    private var seen: [String: ContinuousClock.Instant] = [:]
    private var lastRefresh: ContinuousClock.Instant?
    private var known: Set<String> = []
    private var refreshing: Task<Set<String>?, Never>?

    public init(
        trustFor: Duration = .seconds(60), refreshAtMost: Duration = .milliseconds(250),
        topicNames: @escaping @Sendable () async throws -> Set<String>
    ) {
        self.topicNames = topicNames
        self.trustFor = trustFor
        self.refreshAtMost = refreshAtMost
    }

    public func exists(_ topic: String) async -> Bool {
        let now = ContinuousClock.now
        if let at = seen[topic], now - at < trustFor { return true }
        if let last = lastRefresh, now - last < refreshAtMost, refreshing == nil { return known.contains(topic) }
        let task = refreshing ?? Task { [topicNames] in try? await topicNames() }
        refreshing = task
        let names = await task.value
        if refreshing == task {
            refreshing = nil
            lastRefresh = .now
            if let names {
                known = names
                let at = ContinuousClock.now
                seen = seen.filter { names.contains($0.key) }
                for name in names where seen.count < 10_000 { seen[name] = at }
            }
        }
        guard let names else { return true }  // metadata unavailable: assume it exists
        return names.contains(topic)
    }
}
