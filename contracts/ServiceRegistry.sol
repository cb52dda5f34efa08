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
///      - The payload fixed per registration (owner, name, version, endpoints, metadata) is not in
///        storage: it is packed into the code of a small account created for it, the service's
///        *record* (layout: `_newRecord`), and storage keeps only its address. Code costs 200 gas a
///        byte once, with 32,000 per account; storage costs 22,100 per fresh 32-byte slot. For the
///        reference payload (16 B name, 5 B version, 2 x 30 B endpoints, 64 B metadata) that is 7
///        slots (154,700 gas) against one 173-byte record (66,664 gas), which took registerService
///        from 341,136 to 245,702 gas; the larger the payload, the larger the saving (the largest
///        payload: 2,713,241 -> 910,348).
///        The trade: updateService writes a whole new record (112,549 gas against 56,302 when it
///        rewrote slots in place; old records stay, immutable), and owner checks read the owner
///        from the record (one cold account access, 2,600 gas, besides the slot read that finds
///        the record). Heartbeats by the delegate never touch the record. A record cannot be
///        changed or removed, and starts with STOP so a call to it does nothing.
///      - Every mutation emits an indexed event carrying enough data for an indexer to rebuild the
///        registry: `ServiceRegistered` names the new record instead of repeating its strings
///        (its LOG4 costs 2,387 gas instead of 6,739 for the reference payload), so a
///        registration is rebuilt from its log plus `eth_getCode(record)` at any later block
///        (edgefabric/chain/record.py decodes it); the other events carry everything in the log.
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
        // Slot 1: the record (the code account holding owner, name, version, endpoints and
        // metadata, see `_newRecord`; zero while the id was never registered), the registration
        // time and the positions in the other two index sets.
        address record;
        uint32 registrationTime;
        uint32 allIndex;
        uint24 nameIndex;
    }

    mapping(bytes32 serviceId => Service) private _services;
    bytes32[] private _allIds;
    mapping(bytes32 nameHash => bytes32[]) private _idsByName;
    mapping(address owner => bytes32[]) private _idsByOwner;
    uint256 private _cleanupCursor;
    mapping(bytes32 serviceId => mapping(address delegate => bool)) private _moreDelegates;

    /// @notice A service was registered (or registered again after deregistration or expiry).
    ///         Its owner, name, version, endpoints and metadata are the code of `record` (layout:
    ///         `_newRecord`); read it with eth_getCode.
    event ServiceRegistered(
        bytes32 indexed serviceId,
        address indexed owner,
        bytes32 indexed nameHash,
        address record,
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
    /// @notice Writing the record (a code account holding the payload) failed; only when out of gas.
    error RecordNotWritten();
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
        bytes32 nameHash = keccak256(bytes(name));
        (uint256 word0, uint256 word1) = _enterIndexes(serviceId, nameHash, ttl);
        // Always a new record, even when registering the same id again: the payload may differ.
        address record = _newRecord(_registrationHead(name, version), endpoints, metadata);
        _writeRecordSlots(serviceId, word0, word1 | uint160(record));
        emit ServiceRegistered(serviceId, msg.sender, nameHash, record, ttl);
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
            address record = s.record;
            if (record == address(0)) revert ServiceNotFound(serviceId);
            if (_ownerOf(record) != msg.sender) revert NotHeartbeatSender(serviceId, msg.sender);
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
        address record = s.record;
        if (record == address(0)) revert ServiceNotFound(serviceId);
        if (_ownerOf(record) != msg.sender) revert NotServiceOwner(serviceId, msg.sender);
        if (s.beater == delegate && delegate != msg.sender) s.beater = msg.sender;
        else if (_moreDelegates[serviceId][delegate]) delete _moreDelegates[serviceId][delegate];
        else return;
        emit HeartbeatDelegateSet(serviceId, msg.sender, delegate, false);
    }

    /// @notice Whether `account` is a heartbeat delegate of the service (the owner is not one).
    function isHeartbeatDelegate(bytes32 serviceId, address account) external view returns (bool) {
        Service storage s = _services[serviceId];
        address record = s.record;
        if (account == address(0) || record == address(0) || account == _ownerOf(record)) return false;
        return s.beater == account || _moreDelegates[serviceId][account];
    }

    /// @notice Replace a live service's endpoints and metadata.
    /// @dev Only the owner. Does not count as a heartbeat. Writes a new record (name, version and
    ///      owner copied from the current one) and points the service at it.
    /// @param serviceId The service.
    /// @param endpoints 1..MAX_ENDPOINTS endpoints, each 1..MAX_ENDPOINT_LENGTH bytes.
    /// @param metadata At most MAX_METADATA_LENGTH bytes.
    function updateService(bytes32 serviceId, string[] calldata endpoints, string calldata metadata) external {
        _checkEndpoints(endpoints);
        _checkString("metadata", metadata, MAX_METADATA_LENGTH, false);
        Service storage s = _services[serviceId];
        _checkOwnedAndAlive(serviceId, s);
        s.record = _newRecord(_head(s.record), endpoints, metadata);
        emit ServiceUpdated(serviceId, msg.sender, endpoints, metadata);
    }

    /// @notice Deregister a service and remove it from every index. Its record stays readable.
    /// @dev Only the owner. Allowed on an expired service that was not cleaned up yet.
    /// @param serviceId The service.
    function deregisterService(bytes32 serviceId) external {
        Service storage s = _services[serviceId];
        address record = s.record;
        if (record == address(0)) revert ServiceNotFound(serviceId);
        (address owner, bytes32 nameHash) = _ownerAndNameHash(record);
        if (owner != msg.sender) revert NotServiceOwner(serviceId, msg.sender);
        if (!s.active) revert ServiceNotActive(serviceId);
        _removeFromIndexes(s, owner, nameHash);
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
                (address owner, bytes32 nameHash) = _ownerAndNameHash(s.record);
                _removeFromIndexes(s, owner, nameHash);
                emit ServiceExpired(id, owner, msg.sender);
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
        address record = s.record;
        if (record == address(0)) revert ServiceNotFound(serviceId);
        bytes memory code = _load(record);
        uint256 at;
        assembly ("memory-safe") {
            owner := shr(96, mload(add(code, 32)))
        }
        (name, at) = _string(code, 20, 1, 0);
        (version, at) = _string(code, at, 1, 0);
        endpoints = new string[](uint8(code[at]));
        ++at;
        for (uint256 i = 0; i < endpoints.length; ++i) {
            (endpoints[i], at) = _string(code, at, 1, 1);
        }
        (metadata, at) = _string(code, at, 2, 0);
        registrationTime = s.registrationTime;
        lastHeartbeat = s.lastHeartbeat;
        ttl = s.ttl;
        isActive = s.active && _alive(s);
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
        address record = s.record;
        if (record == address(0)) revert ServiceNotFound(serviceId);
        if (_ownerOf(record) != msg.sender) revert NotServiceOwner(serviceId, msg.sender);
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

    /// @dev Index a registration, or re-use the positions of an expired one still indexed (revert
    ///      if it is alive). Returns the service's two slots as they must be written, but for the
    ///      record address (slot 1, low 160 bits), which the caller adds. Both slots are composed
    ///      and written once each: written field by field, every field after the first would cost
    ///      another read and write of its slot. `beats` (bit 224) restarts at false: it only has to
    ///      flip on each heartbeat.
    function _enterIndexes(bytes32 serviceId, bytes32 nameHash, uint256 ttl)
        private
        returns (uint256 word0, uint256 word1)
    {
        Service storage s = _services[serviceId];
        uint256 ownerIndex = s.ownerIndex;
        uint256 allIndex = s.allIndex;
        uint256 nameIndex = s.nameIndex;
        if (s.active) {
            if (_alive(s)) revert AlreadyRegistered(serviceId);
            // Expired but not yet cleaned up: still in the indexes, so re-use its positions.
        } else {
            bytes32[] storage byName = _idsByName[nameHash];
            bytes32[] storage byOwner = _idsByOwner[msg.sender];
            allIndex = _allIds.length;
            nameIndex = byName.length;
            ownerIndex = byOwner.length;
            if (allIndex >= type(uint32).max) revert IndexFull("all");
            if (nameIndex >= type(uint24).max) revert IndexFull("name");
            if (ownerIndex >= type(uint24).max) revert IndexFull("owner");
            _allIds.push(serviceId);
            byName.push(serviceId);
            byOwner.push(serviceId);
        }
        // A first registration has no delegate; registering the same id again keeps its delegates.
        address beater = s.record == address(0) ? msg.sender : s.beater;
        // uint32 timestamps as everywhere else (good until 2106): truncated, never spilling over.
        uint256 now32 = uint32(block.timestamp);
        word0 = uint160(beater) | (now32 << 160) | (ttl << 192) | (1 << 216) | (ownerIndex << 232);
        word1 = (now32 << 160) | (allIndex << 192) | (nameIndex << 224);
    }

    /// @dev Write both slots of a service (layout: see `Service`).
    function _writeRecordSlots(bytes32 serviceId, uint256 word0, uint256 word1) private {
        Service storage s = _services[serviceId];
        assembly ("memory-safe") {
            sstore(s.slot, word0)
            sstore(add(s.slot, 1), word1)
        }
    }

    /// @dev The head of a new record: owner || name length || name || version length || version.
    function _registrationHead(string calldata name, string calldata version) private view returns (bytes memory) {
        return abi.encodePacked(msg.sender, uint8(bytes(name).length), name, uint8(bytes(version).length), version);
    }

    /// @dev Write a record: a new code account whose code is
    ///        0x00 (STOP, so a call to it does nothing) || head || endpoint count (1 byte)
    ///        || for each endpoint: (length - 1) (1 byte) || bytes || metadata length (2 bytes, big-endian) || metadata
    ///      where head = owner (20 bytes) || name length (1) || name || version length (1) || version.
    ///      Every length fits its field because the inputs were checked against their bounds first.
    ///      The init code is 10 bytes: PUSH2 size, DUP1, PUSH1 10, PUSH0, CODECOPY, PUSH0, RETURN;
    ///      it returns the rest of itself as the new account's code.
    function _newRecord(bytes memory head, string[] calldata endpoints, string calldata metadata)
        private
        returns (address record)
    {
        uint256 count = endpoints.length;
        uint256 size = 1 + head.length + 1 + count + 2 + bytes(metadata).length;
        for (uint256 i = 0; i < count; ++i) {
            size += bytes(endpoints[i]).length;
        }
        bytes memory init = new bytes(10 + size);
        uint256 at;
        assembly ("memory-safe") {
            at := add(init, 32)
            mstore(at, or(or(shl(248, 0x61), shl(232, size)), shl(176, 0x80600a5f395ff3)))
            // Byte 10 is the record's leading STOP (0x00, already zero).
            mcopy(add(at, 11), add(head, 32), mload(head))
            at := add(add(at, 11), mload(head))
            mstore8(at, count)
            at := add(at, 1)
        }
        for (uint256 i = 0; i < count; ++i) {
            string calldata e = endpoints[i];
            assembly ("memory-safe") {
                mstore8(at, sub(e.length, 1))
                calldatacopy(add(at, 1), e.offset, e.length)
                at := add(at, add(e.length, 1))
            }
        }
        assembly ("memory-safe") {
            mstore8(at, shr(8, metadata.length))
            mstore8(add(at, 1), and(metadata.length, 0xff))
            calldatacopy(add(at, 2), metadata.offset, metadata.length)
            record := create(0, add(init, 32), mload(init))
        }
        if (record == address(0)) revert RecordNotWritten();
    }

    /// @dev The head (owner, name, version) of an existing record, to carry into its successor.
    function _head(address record) private view returns (bytes memory head) {
        // 20 + 1 + MAX_NAME_LENGTH + 1 + MAX_VERSION_LENGTH: copying past the head is harmless.
        head = new bytes(118);
        assembly ("memory-safe") {
            let p := add(head, 32)
            extcodecopy(record, p, 1, 118)
            let nameLength := byte(0, mload(add(p, 20)))
            let versionLength := byte(0, mload(add(p, add(21, nameLength))))
            mstore(head, add(22, add(nameLength, versionLength)))
        }
    }

    /// @dev The owner stored in a record (the first 20 bytes after the STOP).
    function _ownerOf(address record) private view returns (address owner) {
        assembly ("memory-safe") {
            extcodecopy(record, 0, 1, 20)
            owner := shr(96, mload(0))
        }
    }

    /// @dev The owner and keccak256(name) of a record, from one code copy.
    function _ownerAndNameHash(address record) private view returns (address owner, bytes32 nameHash) {
        assembly ("memory-safe") {
            // Scratch memory past the free pointer, not allocated: nothing else runs meanwhile.
            let p := mload(0x40)
            extcodecopy(record, p, 1, 85) // owner, name length, name (at most 64 bytes)
            owner := shr(96, mload(p))
            nameHash := keccak256(add(p, 21), byte(0, mload(add(p, 20))))
        }
    }

    /// @dev A record's code without its leading STOP.
    function _load(address record) private view returns (bytes memory code) {
        assembly ("memory-safe") {
            let n := sub(extcodesize(record), 1)
            code := mload(0x40)
            mstore(code, n)
            extcodecopy(record, add(code, 32), 1, n)
            mstore(0x40, add(add(code, 32), and(add(n, 31), not(31))))
        }
    }

    /// @dev The string at `at` in `code` behind a big-endian length field of `lengthBytes` bytes
    ///      holding (length - bias); also returns the position after it.
    function _string(bytes memory code, uint256 at, uint256 lengthBytes, uint256 bias)
        private
        pure
        returns (string memory value, uint256 next)
    {
        uint256 length = uint8(code[at]);
        if (lengthBytes == 2) length = (length << 8) | uint8(code[at + 1]);
        length += bias;
        value = new string(length);
        assembly ("memory-safe") {
            mcopy(add(value, 32), add(add(code, 32), add(at, lengthBytes)), length)
        }
        next = at + lengthBytes + length;
    }

    function _removeFromIndexes(Service storage s, address owner, bytes32 nameHash) private {
        s.active = false;
        _removeAt(_allIds, s.allIndex, 0);
        _removeAt(_idsByName[nameHash], s.nameIndex, 1);
        _removeAt(_idsByOwner[owner], s.ownerIndex, 2);
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
