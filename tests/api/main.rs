//! Integration tests against real Redis and MongoDB wire servers.

mod helpers;
mod proxy;

mod auth_and_errors;
mod cli;
mod concurrency;
mod faults;
mod health;
mod live;
mod mongo;
mod openapi;
mod operations;
mod recovery;
mod reservations;
mod sales;
mod scripts;
mod waitlist;
mod ws_client;
