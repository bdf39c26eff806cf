//! Integration tests against real Redis and MongoDB wire servers.

mod helpers;
mod proxy;
mod redis_cluster;

mod admission;
mod auth_and_errors;
mod browser;
mod cli;
mod cluster;
mod concurrency;
mod deploy;
mod faults;
mod health;
mod live;
mod lobby;
mod mongo;
mod openapi;
mod operations;
mod pages;
mod recovery;
mod reservations;
mod sales;
mod scripts;
mod waitlist;
mod ws_client;
