//! Integration tests of the city role over real gRPC on loopback.

mod city;
