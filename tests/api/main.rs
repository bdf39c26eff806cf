//! Integration tests against real Redis and MongoDB wire servers.
// Tests schedule sales by the machine's clock; the server decides on Redis'.
#![allow(clippy::disallowed_methods)]

mod helpers;
mod lobbies;
mod proxy;
mod receiver;
mod redis_cluster;

mod admission;
mod auth_and_errors;
mod bounds;
mod browser;
mod cancels;
mod cli;
mod cluster;
mod concurrency;
mod deploy;
mod faults;
mod health;
mod launch;
mod layers;
mod live;
mod lobby;
mod mongo;
mod openapi;
mod operations;
mod pages;
mod payments;
mod recovery;
mod reservations;
mod restart;
mod sales;
mod scripts;
mod waitlist;
mod webhooks;
mod ws_client;
