"""OpenAI's Realtime WebSocket protocol on top of the native session (docs/openai-realtime.md): clients built
on the `openai` SDK, LiveKit Agents or Pipecat talk to voxmesh by changing a base URL."""
