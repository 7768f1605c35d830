-- Argo CD health check for trading.iq720.io/MaintenanceWindow (see config/argocd/README.md).
-- Conditions Ready and InvalidSpec (operator/src/maintenancewindow/status.rs) map to Argo
-- CD health statuses. A window has no suspended state.
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

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "The MaintenanceWindow is being deleted"
  return hs
end
if obj.status == nil then
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

local invalid = condition("InvalidSpec")
if invalid ~= nil and invalid.status == "True" then
  hs.status = "Degraded"
  hs.message = invalid.message or "the spec is invalid"
  return hs
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  if ready.reason == "NeverOpens" then
    hs.status = "Degraded"
  else
    hs.status = "Healthy"
  end
  hs.message = ready.message or ready.reason or "scheduled"
  return hs
end
hs.status = "Progressing"
hs.message = (ready ~= nil and ready.message) or "Waiting for the window to become ready"
return hs
