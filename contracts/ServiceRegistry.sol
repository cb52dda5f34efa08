// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title ServiceRegistry
/// @notice On-chain registry of edgefabric services. Each service is registered by an owner with its
///         endpoints and a TTL, and stays alive only while its owner sends heartbeats.
/// @dev Design notes:
///      - Expiry is lazy: every read checks `lastHeartbeat + ttl` against `block.timestamp`, so an
///        expired service is invisible to discovery even before anyone cleans it up.
///      - `cleanupExpiredServices` is optional housekeeping that removes expired entries from the
///        indexes. It walks the set of all ids with a persistent cursor and examines at most
///        `maxItems` entries per call, so its gas cost is bounded whatever the registry size.
///      - All three indexes (all ids, ids by name, ids by owner) are enumerable sets with O(1)
///        insert and swap-and-pop removal; each record stores its positions in them.
///      - Every mutation emits an indexed event carrying enough data for an indexer to rebuild the
///        registry from logs alone.
///      - Least privilege: the owner may name heartbeat delegates per service
///        (`setHeartbeatDelegate`), one per cluster running an agent. A delegate can send
///        heartbeats and nothing else, so a key kept on a cluster cannot redirect endpoints. The
///        first delegate sits in the slot a heartbeat rewrites anyway (its heartbeat reads and
///        writes one slot); further ones are looked up in a mapping (one more slot read).
///        Delegates belong to the id, so they survive a re-registration of the same service.
contract ServiceRegistry {
    /// @notice Longest service name, in bytes.
    uint256 public constant MAX_NAME_LENGTH = 64;
    /// @notice Longest version string, in bytes.
    uint256 public constant MAX_VERSION_LENGTH = 32;
    /// @notice Most endpoints per service.
    uint256 public constant MAX_ENDPOINTS = 8;
    /// @notice Longest endpoint, in bytes.
    uint256 public constant MAX_ENDPOINT_LENGTH = 256;
    /// @notice Longest metadata blob, in bytes.
    uint256 public constant MAX_METADATA_LENGTH = 1024;
    /// @notice Shortest TTL, in seconds (a heartbeat every ttl/3 must stay meaningful).
    uint256 public constant MIN_TTL = 3;
    /// @notice Longest TTL, in seconds (30 days).
    uint256 public constant MAX_TTL = 30 days;
    /// @notice Largest page for paginated views and largest batch for cleanup.
    uint256 public constant MAX_PAGE = 200;

    struct Service {
        // Slot 0: everything a heartbeat reads and writes, so a heartbeat touches one slot.
        // `beater` is the delegate, or the owner while none is named. `beats` flips on every
        // heartbeat, so a heartbeat always changes the slot and costs the same whenever it is
        // sent (a plain eth_estimateGas made in the second of the last write is then enough).
        // Timestamps are uint32 (good until 2106) so that the owner index fits here too.
        address beater;
        uint32 lastHeartbeat;
        uint24 ttl;
        bool active;
        bool beats;
        uint24 ownerIndex;
        // Slot 1: the owner, registration time and positions in the other two index sets.
        address owner;
        uint32 registrationTime;
        uint32 allIndex;
        uint24 nameIndex;
        // Counting endpoints here rather than using a string[] saves the length slot.
        uint8 endpointCount;
        string name;
        string version;
        string metadata;
        mapping(uint256 index => string) endpoints;
    }

    mapping(bytes32 serviceId => Service) private _services;
    bytes32[] private _allIds;
    mapping(bytes32 nameHash => bytes32[]) private _idsByName;
    mapping(address owner => bytes32[]) private _idsByOwner;
    uint256 private _cleanupCursor;
    mapping(bytes32 serviceId => mapping(address delegate => bool)) private _moreDelegates;

    /// @notice A service was registered (or registered again after deregistration or expiry).
    event ServiceRegistered(
        bytes32 indexed serviceId,
        address indexed owner,
        bytes32 indexed nameHash,
        string name,
        string version,
        string[] endpoints,
        string metadata,
        uint256 ttl
    );
    /// @notice A service's endpoints and metadata were replaced.
    event ServiceUpdated(bytes32 indexed serviceId, address indexed owner, string[] endpoints, string metadata);
    /// @notice The service was proved alive at `timestamp` by `sender` (its owner or delegate).
    event ServiceHeartbeat(bytes32 indexed serviceId, address indexed sender, uint256 timestamp);
    /// @notice The owner allowed (`allowed`) or revoked `delegate` as a heartbeat sender.
    event HeartbeatDelegateSet(bytes32 indexed serviceId, address indexed owner, address indexed delegate, bool allowed);
    /// @notice A service was deregistered by its owner.
    event ServiceDeregistered(bytes32 indexed serviceId, address indexed owner);
    /// @notice An expired service was removed from the indexes by `cleanedBy`.
    event ServiceExpired(bytes32 indexed serviceId, address indexed owner, address indexed cleanedBy);

    /// @notice The caller is not the owner of the service.
    error NotServiceOwner(bytes32 serviceId, address caller);
    /// @notice The caller is neither the owner nor the heartbeat delegate of the service.
    error NotHeartbeatSender(bytes32 serviceId, address caller);
    /// @notice An index outgrew its position field (2^32 services, 2^24 per name or owner).
    error IndexFull(string index);
    /// @notice No service with this id was ever registered.
    error ServiceNotFound(bytes32 serviceId);
    /// @notice The service is deregistered or was cleaned up after expiry.
    error ServiceNotActive(bytes32 serviceId);
    /// @notice The service's TTL ran out at `expiredAt`; register it again.
    error ServiceTtlExpired(bytes32 serviceId, uint256 expiredAt);
    /// @notice The same owner already has this name and version registered and alive.
    error AlreadyRegistered(bytes32 serviceId);
    /// @notice An input exceeds its bound.
    error InputTooLarge(string field, uint256 size, uint256 max);
    /// @notice A required input is empty.
    error EmptyInput(string field);
    /// @notice The TTL is outside [min, max].
    error InvalidTtl(uint256 ttl, uint256 min, uint256 max);

    /// @notice Register a service owned by the caller.
    /// @dev Registering again after `deregisterService`, or after the TTL ran out, reuses the same id.
    /// @param name Service name, 1..MAX_NAME_LENGTH bytes.
    /// @param version Version string, 1..MAX_VERSION_LENGTH bytes.
    /// @param endpoints 1..MAX_ENDPOINTS endpoints, each 1..MAX_ENDPOINT_LENGTH bytes.
    /// @param metadata Free-form metadata, at most MAX_METADATA_LENGTH bytes.
    /// @param ttl Seconds the service stays alive after each heartbeat, MIN_TTL..MAX_TTL.
    /// @return serviceId `getServiceId(name, version, msg.sender)`.
    function registerService(
        string calldata name,
        string calldata version,
        string[] calldata endpoints,
        string calldata metadata,
        uint256 ttl
    ) external returns (bytes32 serviceId) {
        _checkString("name", name, MAX_NAME_LENGTH, true);
        _checkString("version", version, MAX_VERSION_LENGTH, true);
        _checkEndpoints(endpoints);
        _checkString("metadata", metadata, MAX_METADATA_LENGTH, false);
        if (ttl < MIN_TTL || ttl > MAX_TTL) revert InvalidTtl(ttl, MIN_TTL, MAX_TTL);

        serviceId = getServiceId(name, version, msg.sender);
        Service storage s = _services[serviceId];
        bytes32 nameHash = keccak256(bytes(name));
        if (s.active) {
            if (_alive(s)) revert AlreadyRegistered(serviceId);
            // Expired but not yet cleaned up: still in the indexes, so re-use its positions.
        } else {
            bytes32[] storage byName = _idsByName[nameHash];
            bytes32[] storage byOwner = _idsByOwner[msg.sender];
            if (_allIds.length >= type(uint32).max) revert IndexFull("all");
            if (byName.length >= type(uint24).max) revert IndexFull("name");
            if (byOwner.length >= type(uint24).max) revert IndexFull("owner");
            s.allIndex = uint32(_allIds.length);
            _allIds.push(serviceId);
            s.nameIndex = uint24(byName.length);
            byName.push(serviceId);
            s.ownerIndex = uint24(byOwner.length);
            byOwner.push(serviceId);
        }
        // A first registration has no delegate; registering the same id again keeps its delegates.
        if (s.owner == address(0)) s.beater = msg.sender;
        s.lastHeartbeat = uint32(block.timestamp);
        s.ttl = uint24(ttl);
        s.active = true;
        s.owner = msg.sender;
        s.registrationTime = uint32(block.timestamp);
        s.name = name;
        s.version = version;
        _storeEndpoints(s, endpoints);
        s.metadata = metadata;
        emit ServiceRegistered(serviceId, msg.sender, nameHash, name, version, endpoints, metadata, ttl);
    }

    /// @notice Prove the service alive: its TTL restarts now.
    /// @dev The heartbeat delegate or the owner; reverts with ServiceTtlExpired once the TTL ran out
    ///      (register again instead).
    /// @param serviceId The service.
    function updateHeartbeat(bytes32 serviceId) external {
        Service storage s = _services[serviceId];
        address beater = s.beater;
        if (beater != msg.sender && !_moreDelegates[serviceId][msg.sender]) {
            // Neither the first delegate nor another one: the owner may still beat; nobody else.
            address owner = s.owner;
            if (owner == address(0)) revert ServiceNotFound(serviceId);
            if (owner != msg.sender) revert NotHeartbeatSender(serviceId, msg.sender);
        }
        if (!s.active) revert ServiceNotActive(serviceId);
        uint256 expiresAt = uint256(s.lastHeartbeat) + uint256(s.ttl);
        if (expiresAt < block.timestamp) revert ServiceTtlExpired(serviceId, expiresAt);
        s.lastHeartbeat = uint32(block.timestamp);
        s.beats = !s.beats;
        emit ServiceHeartbeat(serviceId, msg.sender, block.timestamp);
    }

    /// @notice Allow `delegate` to heartbeat this service, and nothing else.
    /// @dev Only the owner, on a live service. Idempotent.
    /// @param serviceId The service.
    /// @param delegate The account (a cluster's agent key); not the zero address.
    function setHeartbeatDelegate(bytes32 serviceId, address delegate) external {
        Service storage s = _services[serviceId];
        _checkOwnedAndAlive(serviceId, s);
        if (delegate == address(0)) revert EmptyInput("delegate");
        if (s.beater == delegate || _moreDelegates[serviceId][delegate]) return;
        if (s.beater == msg.sender) s.beater = delegate;
        else _moreDelegates[serviceId][delegate] = true;
        emit HeartbeatDelegateSet(serviceId, msg.sender, delegate, true);
    }

    /// @notice Withdraw `delegate`'s right to heartbeat this service (a rotated or lost key).
    /// @dev Only the owner; allowed on an expired or deregistered service too. Idempotent.
    function revokeHeartbeatDelegate(bytes32 serviceId, address delegate) external {
        Service storage s = _services[serviceId];
        if (s.owner == address(0)) revert ServiceNotFound(serviceId);
        if (s.owner != msg.sender) revert NotServiceOwner(serviceId, msg.sender);
        if (s.beater == delegate && delegate != msg.sender) s.beater = msg.sender;
        else if (_moreDelegates[serviceId][delegate]) delete _moreDelegates[serviceId][delegate];
        else return;
        emit HeartbeatDelegateSet(serviceId, msg.sender, delegate, false);
    }

    /// @notice Whether `account` is a heartbeat delegate of the service (the owner is not one).
    function isHeartbeatDelegate(bytes32 serviceId, address account) external view returns (bool) {
        Service storage s = _services[serviceId];
        if (account == address(0) || account == s.owner) return false;
        return s.beater == account || _moreDelegates[serviceId][account];
    }

    /// @notice Replace a live service's endpoints and metadata.
    /// @dev Only the owner. Does not count as a heartbeat.
    /// @param serviceId The service.
    /// @param endpoints 1..MAX_ENDPOINTS endpoints, each 1..MAX_ENDPOINT_LENGTH bytes.
    /// @param metadata At most MAX_METADATA_LENGTH bytes.
    function updateService(bytes32 serviceId, string[] calldata endpoints, string calldata metadata) external {
        _checkEndpoints(endpoints);
        _checkString("metadata", metadata, MAX_METADATA_LENGTH, false);
        Service storage s = _services[serviceId];
        _checkOwnedAndAlive(serviceId, s);
        _storeEndpoints(s, endpoints);
        s.metadata = metadata;
        emit ServiceUpdated(serviceId, msg.sender, endpoints, metadata);
    }

    /// @notice Deregister a service and remove it from every index. Its record stays readable.
    /// @dev Only the owner. Allowed on an expired service that was not cleaned up yet.
    /// @param serviceId The service.
    function deregisterService(bytes32 serviceId) external {
        Service storage s = _services[serviceId];
        if (s.owner == address(0)) revert ServiceNotFound(serviceId);
        if (s.owner != msg.sender) revert NotServiceOwner(serviceId, msg.sender);
        if (!s.active) revert ServiceNotActive(serviceId);
        _removeFromIndexes(s);
        emit ServiceDeregistered(serviceId, msg.sender);
    }

    /// @notice Remove up to `maxItems` examined entries' worth of expired services from the indexes.
    /// @dev Anyone may call. Walks the set of all ids from a persistent cursor, wrapping around, and
    ///      examines at most `maxItems` entries, so the gas cost is bounded by `maxItems`.
    /// @param maxItems Entries to examine in this call, 1..MAX_PAGE.
    /// @return cleaned Number of expired services removed.
    function cleanupExpiredServices(uint256 maxItems) external returns (uint256 cleaned) {
        if (maxItems == 0) revert EmptyInput("maxItems");
        if (maxItems > MAX_PAGE) revert InputTooLarge("maxItems", maxItems, MAX_PAGE);
        uint256 length = _allIds.length;
        uint256 cursor = _cleanupCursor;
        for (uint256 examined = 0; examined < maxItems && length > 0; ++examined) {
            if (cursor >= length) cursor = 0;
            bytes32 id = _allIds[cursor];
            Service storage s = _services[id];
            if (_alive(s)) {
                ++cursor;
            } else {
                // Swap-and-pop moves the last id into `cursor`: examine that slot again next.
                _removeFromIndexes(s);
                emit ServiceExpired(id, s.owner, msg.sender);
                ++cleaned;
                --length;
            }
        }
        _cleanupCursor = cursor;
    }

    /// @notice Read a service record.
    /// @dev `isActive` is evaluated lazily: true only if registered, not deregistered and not expired.
    /// @param serviceId The service.
    function getService(bytes32 serviceId)
        external
        view
        returns (
            string memory name,
            string memory version,
            string[] memory endpoints,
            string memory metadata,
            address owner,
            uint256 registrationTime,
            uint256 lastHeartbeat,
            uint256 ttl,
            bool isActive
        )
    {
        Service storage s = _services[serviceId];
        if (s.owner == address(0)) revert ServiceNotFound(serviceId);
        endpoints = new string[](s.endpointCount);
        for (uint256 i = 0; i < endpoints.length; ++i) {
            endpoints[i] = s.endpoints[i];
        }
        return (
            s.name,
            s.version,
            endpoints,
            s.metadata,
            s.owner,
            s.registrationTime,
            s.lastHeartbeat,
            s.ttl,
            s.active && _alive(s)
        );
    }

    /// @notice Whether the service is registered, not deregistered and within its TTL.
    /// @param serviceId The service; unknown ids are simply not alive.
    function isAlive(bytes32 serviceId) external view returns (bool) {
        Service storage s = _services[serviceId];
        return s.active && _alive(s);
    }

    /// @notice The id of `(name, version)` registered by `owner`, whether or not it exists.
    /// @dev `abi.encode` keeps the fields apart, so ("svc", "1.0") and ("svc1", ".0") differ.
    function getServiceId(string memory name, string memory version, address owner)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(name, version, owner));
    }

    /// @notice Ids indexed under `name`: registered, not deregistered, not yet cleaned up (may be expired).
    /// @dev Unbounded read meant for off-chain callers; use `discoverServices` for live ids, paginated.
    function getServiceVersions(string memory name) external view returns (bytes32[] memory) {
        return _idsByName[keccak256(bytes(name))];
    }

    /// @notice Ids indexed under `owner`: registered, not deregistered, not yet cleaned up (may be expired).
    /// @dev Unbounded read meant for off-chain callers.
    function getOwnerServices(address owner) external view returns (bytes32[] memory) {
        return _idsByOwner[owner];
    }

    /// @notice Live ids registered under `name`, one page at a time.
    /// @dev Scans the name's index entries [offset, offset + limit) and returns the live ones, so a page
    ///      may hold fewer than `limit` ids. Continue from `nextOffset` while `nextOffset < total`.
    /// @param name Service name.
    /// @param offset First index entry to scan.
    /// @param limit Entries to scan, 1..MAX_PAGE.
    /// @return ids Live service ids in this page.
    /// @return nextOffset Offset of the next page.
    /// @return total Number of index entries under `name`.
    function discoverServices(string memory name, uint256 offset, uint256 limit)
        external
        view
        returns (bytes32[] memory ids, uint256 nextOffset, uint256 total)
    {
        if (limit == 0) revert EmptyInput("limit");
        if (limit > MAX_PAGE) revert InputTooLarge("limit", limit, MAX_PAGE);
        bytes32[] storage byName = _idsByName[keccak256(bytes(name))];
        total = byName.length;
        if (offset >= total) return (new bytes32[](0), total, total);
        uint256 end = offset + limit < total ? offset + limit : total;
        ids = new bytes32[](end - offset);
        uint256 found = 0;
        for (uint256 i = offset; i < end; ++i) {
            bytes32 id = byName[i];
            if (_alive(_services[id])) ids[found++] = id;
        }
        // Shrink the returned array to the live ids found.
        assembly ("memory-safe") {
            mstore(ids, found)
        }
        nextOffset = end;
    }

    /// @notice Number of ids in the all-services index (live or expired, not yet cleaned up).
    function indexedServiceCount() external view returns (uint256) {
        return _allIds.length;
    }

    function _alive(Service storage s) private view returns (bool) {
        return uint256(s.lastHeartbeat) + uint256(s.ttl) >= block.timestamp;
    }

    function _checkOwnedAndAlive(bytes32 serviceId, Service storage s) private view {
        address owner = s.owner;
        if (owner == address(0)) revert ServiceNotFound(serviceId);
        if (owner != msg.sender) revert NotServiceOwner(serviceId, msg.sender);
        if (!s.active) revert ServiceNotActive(serviceId);
        uint256 expiresAt = uint256(s.lastHeartbeat) + uint256(s.ttl);
        if (expiresAt < block.timestamp) revert ServiceTtlExpired(serviceId, expiresAt);
    }

    function _checkString(string memory field, string calldata value, uint256 max, bool required) private pure {
        uint256 size = bytes(value).length;
        if (required && size == 0) revert EmptyInput(field);
        if (size > max) revert InputTooLarge(field, size, max);
    }

    function _checkEndpoints(string[] calldata endpoints) private pure {
        if (endpoints.length == 0) revert EmptyInput("endpoints");
        if (endpoints.length > MAX_ENDPOINTS) revert InputTooLarge("endpoints", endpoints.length, MAX_ENDPOINTS);
        for (uint256 i = 0; i < endpoints.length; ++i) {
            _checkString("endpoint", endpoints[i], MAX_ENDPOINT_LENGTH, true);
        }
    }

    /// @dev Entries past the new count are left in place: `endpointCount` bounds every read, and
    ///      clearing them would cost gas for nothing.
    function _storeEndpoints(Service storage s, string[] calldata endpoints) private {
        s.endpointCount = uint8(endpoints.length);
        for (uint256 i = 0; i < endpoints.length; ++i) {
            s.endpoints[i] = endpoints[i];
        }
    }

    function _removeFromIndexes(Service storage s) private {
        s.active = false;
        _removeAt(_allIds, s.allIndex, 0);
        _removeAt(_idsByName[keccak256(bytes(s.name))], s.nameIndex, 1);
        _removeAt(_idsByOwner[s.owner], s.ownerIndex, 2);
    }

    /// @dev Swap-and-pop the id at `index` out of `set`; fix the moved id's stored position.
    ///      `which` selects the position field: 0 all, 1 name, 2 owner.
    function _removeAt(bytes32[] storage set, uint256 index, uint8 which) private {
        uint256 lastIndex = set.length - 1;
        if (index != lastIndex) {
            bytes32 moved = set[lastIndex];
            set[index] = moved;
            Service storage m = _services[moved];
            if (which == 0) m.allIndex = uint32(index);
            else if (which == 1) m.nameIndex = uint24(index);
            else m.ownerIndex = uint24(index);
        }
        set.pop();
    }
}
