//! Tools the mesh's agents call outside it: MCP servers (Model Context
//! Protocol), started, watched and stopped by [`mcp::McpHub`].

pub mod mcp;
