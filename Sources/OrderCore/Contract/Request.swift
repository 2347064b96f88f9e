/// Which request topic a record came from; decides which actions are served there.
public enum RequestTopicKind: String, Sendable, CaseIterable {
    case cart, order, admin

    public var actions: Set<String> {
        switch self {
        case .cart: ["add_item", "get_cart", "update_item", "remove_item"]
        case .order: ["create_order", "list_orders", "get_order"]
        case .admin: ["list_carts"]
        }
    }
}

/// A decoded, validated request: what the client asked for, in domain terms.
public enum Command: Sendable, Equatable {
    case addItem(userId: Int64, productId: Int64, quantity: Int)
    case getCart(userId: Int64)
    case updateItem(userId: Int64, productId: Int64, quantity: Int)
    case removeItem(userId: Int64, productId: Int64)
    case createOrder(userId: Int64)
    /// `limit` nil: as many as fit in one reply; `beforeOrderId` nil: from the newest.
    case listOrders(userId: Int64, limit: Int? = nil, beforeOrderId: Int64? = nil)
    case getOrder(userId: Int64, orderId: Int64)
    case listCarts(limit: Int, afterCartId: Int64?)

    public var action: String {
        switch self {
        case .addItem: "add_item"
        case .getCart: "get_cart"
        case .updateItem: "update_item"
        case .removeItem: "remove_item"
        case .createOrder: "create_order"
        case .listOrders: "list_orders"
        case .getOrder: "get_order"
        case .listCarts: "list_carts"
        }
    }

    public var userId: Int64? {
        switch self {
        case .addItem(let u, _, _), .getCart(let u), .updateItem(let u, _, _), .removeItem(let u, _),
            .createOrder(let u), .listOrders(let u, _, _), .getOrder(let u, _):
            u
        case .listCarts: nil
        }
    }

    /// Whether the command only reads.
    public var isReadOnly: Bool {
        switch self {
        case .getCart, .listOrders, .getOrder, .listCarts: true
        default: false
        }
    }
}

public struct Request: Sendable, Equatable {
    public var requestId: String?
    public var command: Command
    public init(requestId: String?, command: Command) {
        self.requestId = requestId
        self.command = command
    }
}

/// Limits from the contract.
public enum Limits {
    public static let maxQuantity = 10_000
    public static let maxCartLines = 100
    public static let maxRequestIdLength = 128
    public static let defaultListCartsLimit = 100
    public static let maxListCartsLimit = 1_000
    public static let maxListOrdersLimit = 1_000
    /// Apache Kafka's default largest record (`max.message.bytes` 1 MiB); see `ORDER_SERVICE_MAX_RECORD_BYTES`.
    public static let defaultMaxRecordBytes = 1_048_576
}
