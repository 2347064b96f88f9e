/// What one request came to: its action (as far as it could be read), ok or the error code, and
/// the reply's bytes. Built where the reply is built, so that metrics and routing never read the
/// bytes again; only a reply stored earlier (a repeat) is read back (`init(stored:)`).
public struct RequestOutcome: Sendable, Equatable {
    public enum Status: Sendable, Equatable {
        case ok
        case error(ErrorCode)
        /// A stored reply whose status could not be read (never one of ours).
        case unreadable
    }

    /// The reply's `action`; nil when the request's could not be read.
    public let action: String?
    public let status: Status
    public let reply: [UInt8]

    public init(action: String?, status: Status, reply: [UInt8]) {
        self.action = action
        self.status = status
        self.reply = reply
    }

    public static func ok(requestId: String?, action: String, body: [(String, JSON)]) -> RequestOutcome {
        RequestOutcome(action: action, status: .ok, reply: Reply.ok(requestId: requestId, action: action, body: body).bytes)
    }

    public static func error(requestId: String?, action: String?, _ error: ServiceError) -> RequestOutcome {
        RequestOutcome(action: action, status: .error(error.code), reply: Reply.error(requestId: requestId, action: action, error).bytes)
    }

    /// A reply stored under the request's idempotency key by an earlier delivery. Its action and
    /// status are read from the envelope's front, where `Reply` writes them (after `request_id`,
    /// whose ≤ 128 scalars fit well within the first 1,024 bytes even escaped).
    public init(stored bytes: [UInt8]) {
        let head = bytes.prefix(1024)
        let action = Self.string(after: #""action":""#, in: head)
        let status: Status
        if Self.find(Array(#""status":"ok""#.utf8), in: head) != nil {
            status = .ok
        } else if let code = Self.string(after: #""code":""#, in: head).flatMap(ErrorCode.init(rawValue:)) {
            status = .error(code)
        } else {
            status = .unreadable
        }
        self.init(action: action, status: status, reply: bytes)
    }

    // MARK: Metrics labels

    /// The action for metrics: one of the contract's, "unknown" for any other, "malformed" when
    /// the request's could not be read (the label set stays bounded whatever clients send).
    public var metricsAction: String { Self.metricsAction(action) }

    /// An action as metrics name it: one of the contract's, "unknown" or "malformed" (a client's
    /// made-up actions must not grow the metrics without bound).
    public static func metricsAction(_ action: String?) -> String {
        guard let action else { return "malformed" }
        return RequestTopicKind.allCases.contains { $0.actions.contains(action) } ? action : "unknown"
    }

    /// "ok" or the error code ("error" for an unreadable stored reply).
    public var metricsOutcome: String {
        switch status {
        case .ok: "ok"
        case .error(let code): code.rawValue
        case .unreadable: "error"
        }
    }

    // MARK: Reading a stored reply

    /// The string value that follows `marker` (up to the next quote), if the marker occurs.
    private static func string(after marker: String, in head: ArraySlice<UInt8>) -> String? {
        guard let at = find(Array(marker.utf8), in: head) else { return nil }
        let rest = head[at...]
        guard let end = rest.firstIndex(of: UInt8(ascii: "\"")) else { return nil }
        return String(decoding: rest[..<end], as: UTF8.self)
    }

    /// The index just after the first occurrence of `needle` in `hay`.
    static func find(_ needle: [UInt8], in hay: ArraySlice<UInt8>) -> Int? {
        guard !needle.isEmpty, hay.count >= needle.count else { return nil }
        var i = hay.startIndex
        let last = hay.endIndex - needle.count
        while i <= last {
            if hay[i] == needle[0], hay[i..<(i + needle.count)].elementsEqual(needle) { return i + needle.count }
            i += 1
        }
        return nil
    }
}
