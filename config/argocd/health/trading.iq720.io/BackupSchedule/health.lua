-- Argo CD health check for trading.iq720.io/BackupSchedule (see config/argocd/README.md).
-- Conditions Ready, InvalidSpec, LastBackupSucceeded (operator/src/backupschedule/status.rs)
-- and status.lastResult map to Argo CD health statuses.
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
  hs.message = "The BackupSchedule is being deleted"
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
local last = condition("LastBackupSucceeded")
if last ~= nil and last.status == "False" then
  hs.status = "Degraded"
  hs.message = "Last backup failed: " .. (last.message or "")
  return hs
end
local result = obj.status.lastResult
if result == "Failed" or result == "PartiallyFailed" then
  hs.status = "Degraded"
  hs.message = "Last backup run " .. result
  return hs
end
if obj.spec ~= nil and obj.spec.suspend then
  hs.status = "Suspended"
  hs.message = "Scheduled backups are suspended; on-demand backups still run"
  return hs
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  local msg = ready.message or "backups run on the schedule"
  if result ~= nil then
    msg = msg .. "; last run " .. result
  end
  if obj.status.nextScheduleTime ~= nil then
    msg = msg .. "; next run " .. obj.status.nextScheduleTime
  end
  hs.message = msg
  return hs
end
hs.status = "Progressing"
hs.message = (ready ~= nil and ready.message) or "Waiting for the schedule to become ready"
return hs
