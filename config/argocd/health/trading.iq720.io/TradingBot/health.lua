-- Argo CD health check for trading.iq720.io/TradingBot (see config/argocd/README.md).
-- Phases (crds/src/trading_bot.rs TradingBotPhase) and conditions
-- (operator/src/tradingbot/status.rs) map to Argo CD health statuses.
local hs = {}

local function condition(t)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then
      return c
    end
  end
  return nil
end

local function message_of(t, fallback)
  local c = condition(t)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "The TradingBot is being deleted"
  return hs
end
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end
local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = obj.status.phase
if phase == "Running" then
  local md = condition("MarketDataHealthy")
  if md ~= nil and md.status == "False" then
    hs.status = "Degraded"
    hs.message = "Running on stale market data: " .. (md.message or "")
    return hs
  end
  for _, t in ipairs({"ResourcesApplied", "StorageInSync"}) do
    local c = condition(t)
    if c ~= nil and c.status == "False" then
      hs.status = "Degraded"
      hs.message = t .. ": " .. (c.message or "")
      return hs
    end
  end
  hs.status = "Healthy"
  hs.message = message_of("Ready", "Running")
  local pending = condition("MaintenancePending")
  if pending ~= nil and pending.status == "True" then
    hs.message = hs.message .. "; " .. (pending.message or "a change waits for a maintenance window")
  end
  return hs
end
if phase == "Pending" or phase == "Starting" or phase == "Upgrading" then
  hs.status = "Progressing"
  hs.message = phase .. ": " .. message_of("Ready", "the bot is not ready yet")
  return hs
end
if phase == "Paused" then
  hs.status = "Suspended"
  hs.message = message_of("Paused", "new entries are paused")
  return hs
end
if phase == "Halted" then
  hs.status = "Suspended"
  hs.message = message_of("Ready", "the bot halted new entries")
  return hs
end
if phase == "EmergencyStopped" then
  local stop = obj.status.emergencyStop
  if stop ~= nil and stop.positionsMayRemain then
    hs.status = "Degraded"
    hs.message = "Emergency stopped; positions may remain open: " .. (stop.message or "check the exchange account")
    return hs
  end
  hs.status = "Suspended"
  hs.message = message_of("EmergencyStopped", "Emergency stopped: positions closed, replicas at zero")
  return hs
end
if phase == "Invalid" then
  hs.status = "Degraded"
  hs.message = message_of("InvalidSpec", "the spec is invalid")
  return hs
end
if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message_of("Ready", "the bot is failing")
  return hs
end
hs.status = "Unknown"
hs.message = "Unknown phase " .. tostring(phase)
return hs
