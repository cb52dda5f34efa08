// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title DeploymentLedger
/// @notice An append-only log of edgefabric deployments: one entry per `pulumi up` that changed
///         what is deployed (the code's git commit, the typed config, the resource graph).
/// @dev Kept apart from ServiceRegistry on purpose: the registry's gas (every heartbeat) and its
///      upgrade story (a new bytecode re-registers every service) stay untouched, and the ledger
///      outlives registry upgrades, so the history of a stack is never cut at a registry change.
///      - The history lives in events only (`Recorded`): the full entry is in the log data, so
///        an indexer or `edgefabric audit` rebuilds it from logs alone. Storage holds just the
///        latest entry per stack, compactly: its hash (one slot) and writer, time and count
///        (one packed slot), so a record costs two slot writes whatever the history's length.
///      - A stack belongs to the first account that records for it; only that account may append
///        (or hand the stack over), so nobody else can forge a stack's history.
contract DeploymentLedger {
    struct Latest {
        bytes32 entryHash; // keccak256(abi.encode(commit, configHash, graphHash, deployer, time))
        address owner; // who may append to this stack
        uint64 time; // block.timestamp of the latest entry
        uint32 count; // number of entries so far (the next entry's sequence number)
    }

    /// @notice The latest entry of each stack, by keccak256(bytes(stack)).
    mapping(bytes32 => Latest) public latest;

    /// @notice One entry. `seq` counts from 0 per stack.
    event Recorded(
        bytes32 indexed stackKey,
        uint32 indexed seq,
        address indexed deployer,
        string stack,
        bytes20 commit,
        bytes32 configHash,
        bytes32 graphHash,
        uint64 time
    );
    /// @notice The stack is now written by `newOwner`.
    event StackHandedOver(bytes32 indexed stackKey, address indexed from, address indexed to);

    error NotStackOwner(bytes32 stackKey, address owner);
    error EmptyStack();
    error ZeroAddress();

    /// @notice Append an entry for `stack`; returns its sequence number.
    function record(string calldata stack, bytes20 commit, bytes32 configHash, bytes32 graphHash)
        external
        returns (uint32 seq)
    {
        if (bytes(stack).length == 0) revert EmptyStack();
        bytes32 key = keccak256(bytes(stack));
        Latest storage entry = latest[key];
        address owner = entry.owner;
        if (owner == address(0)) {
            entry.owner = msg.sender;
        } else if (owner != msg.sender) {
            revert NotStackOwner(key, owner);
        }
        seq = entry.count;
        uint64 time = uint64(block.timestamp);
        entry.entryHash = keccak256(abi.encode(commit, configHash, graphHash, msg.sender, time));
        entry.time = time;
        entry.count = seq + 1;
        emit Recorded(key, seq, msg.sender, stack, commit, configHash, graphHash, time);
    }

    /// @notice Let `newOwner` (a rotated deployer key) append to `stack` from now on.
    function handOver(string calldata stack, address newOwner) external {
        if (newOwner == address(0)) revert ZeroAddress();
        bytes32 key = keccak256(bytes(stack));
        Latest storage entry = latest[key];
        if (entry.owner != msg.sender) revert NotStackOwner(key, entry.owner);
        entry.owner = newOwner;
        emit StackHandedOver(key, msg.sender, newOwner);
    }
}
