// The point-to-point engine's wire format and op stages, shared by its
// files (p2p_engine.cpp: matching and progress; single_copy.cpp: one host's
// single copy). Internal to csrc/p2p.
#pragma once

#include <cstddef>
#include <cstdint>

#include "p2p_engine.h"

namespace pycomm {
namespace p2p {

constexpr uint32_t kMagic = 0x4d503250;  // "P2PM"
enum Kind : uint8_t { kEager = 1, kRts = 2, kCts = 3, kNack = 4, kData = 5, kFin = 6, kHelp = 7, kPush = 8,
                      kPushed = 9 };

// Every message on a p2p link starts with one (64 bytes: shared memory keeps
// messages 64-byte aligned). Every kind but EAGER and RTS names the message
// (`msg`, the sender's number for it on this link) it answers or carries.
struct Header {
  uint32_t magic;
  uint8_t kind;
  uint8_t pad[3];
  int32_t src;
  int32_t tag;
  uint64_t msg;
  uint64_t bytes;       // the message's payload
  uint64_t recv_bytes;  // CTS, NACK: the size of the receive that took it; PUSH: where the sender's part
                        // begins (the receiver reads up to there); PUSHED: the bytes written (0: none)
  uint64_t addr;        // RTS on one host: where the payload is in the sender's memory (0: not offered);
                        // PUSH: where the receive's buffer is
  int32_t pid;          // ... and in which process
  uint32_t reserved;
  uint64_t seq;         // EAGER, RTS: the message's number among this pair's with its tag; NACK: echoed
};
static_assert(sizeof(Header) == 64, "one aligned block");

// Ops' stages.
enum Stage : int {
  kQueued = 0,     // send: its eager message or RTS is queued; receive: posted
  kWaitCts = 1,    // send: RTS written, waiting for the receiver
  kSending = 2,    // send: DATA queued
  kWaitData = 3,   // receive: CTS sent, waiting for DATA
  kReading = 4,    // receive: its payload is arriving into its buffer
  kCopying = 5,    // receive: copying out of the sender's memory, a slice per progress round
  kWaitPushed = 6, // receive: its part copied, waiting for the sender's (PUSHED)
};

}  // namespace p2p

// What a message's header offers a receive.
struct P2PEngine::Offer {
  int kind;
  uint64_t msg, seq;
  int tag;
  size_t bytes;
  uint64_t addr;
  int pid;
  bool help = false;  // RTS: its sender offered to copy (HELP) before a receive took it
};

}  // namespace pycomm
